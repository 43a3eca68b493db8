"""Recording a new job: its `submitted` event, then its entries in the job index.

Both jobtrail's own submissions (app/service.py) and the submissions a user's taskiq
app makes through its middleware (workers/taskiq_middleware.py) come through here, so
a job is listed the same way whoever created it.
"""

from __future__ import annotations

from app.eventlog import Appended, EventLog
from app.events import EventType, SubmittedData
from app.index import JobIndex
from app.offsets import id_key


async def record_submitted(events: EventLog, index: JobIndex, job_id: str, data: SubmittedData) -> Appended:
    """Append the job's `submitted` and list it, newest first, by that event's time.

    Two round trips (the append, then one pipeline to the index) and a third to the
    activity feed. Raises JobExists, and then lists nothing, when the job already exists.
    The index is derived: a failure there raises after the job exists, and the caller
    decides whether that matters.
    """
    appended = await events.append(job_id, EventType.SUBMITTED, data)
    await index.add(job_id, id_key(appended.id)[0], data.tenant)
    return appended

"""Recording a new job: its `submitted` event, then its entries in the job index.

Both jobtrail's own submissions (app/service.py) and the submissions a user's taskiq
app makes through its middleware (workers/taskiq_middleware.py) come through here, so
a job is listed the same way whoever created it.
"""

from __future__ import annotations

import uuid

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, SubmittedData
from jobtrail.index import JobIndex
from jobtrail.jobstate import JobState


async def record_submitted(events: EventLog, index: JobIndex, job_id: str, data: SubmittedData) -> JobState:
    """Append the job's `submitted` and list it; the new job's state.

    Three round trips (the append, the state, one pipeline to the index) and one more to
    the activity feed. Raises JobExists, and then lists nothing, when another request
    made the job. The append carries a key of this call alone: when its reply is lost and
    redis-py sends it again, the script answers `duplicate` for this call's own first
    write, which created the job, so the retry is not taken for another request's.
    The index is derived: a failure there raises after the job exists, and the caller
    decides whether that matters.
    """
    await events.append(job_id, EventType.SUBMITTED, data, key=f"submitted:{uuid.uuid4().hex}")
    job = await events.state(job_id)
    events.metrics.submitted(job.kind, job.tenant)
    await index_job(index, job)
    return job


async def index_job(index: JobIndex, job: JobState) -> None:
    """List the job in the global and its tenant's index, by creation time (one round trip).

    Idempotent: a repeat of a submission lists it again, which repairs a creator that
    died before it got here.
    """
    created_ms = round(job.created_at.timestamp() * 1000) if job.created_at else 0
    await index.add(job.id, created_ms, job.tenant)

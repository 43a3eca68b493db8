"""Recording a new job: its `submitted` event, then its entries in the job index.

Both jobtrail's own submissions (app/service.py) and the submissions a user's taskiq
app makes through its middleware (workers/taskiq_middleware.py) come through here, so
a job is listed the same way whoever created it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from redis.asyncio.client import Pipeline

from jobtrail.batching import SharedPipeline
from jobtrail.eventlog import Appended, EventLog
from jobtrail.events import Event, EventType, SubmittedData, check_data
from jobtrail.index import JobIndex
from jobtrail.jobstate import JobState
from jobtrail.reducer import fold


async def record_submitted(
    events: EventLog,
    index: JobIndex,
    job_id: str,
    data: SubmittedData,
    *,
    before: Callable[[Pipeline], object] | None = None,
    also: Callable[[Pipeline], object] | None = None,
    shared: SharedPipeline | None = None,
) -> tuple[JobState, list[object]]:
    """Append the job's `submitted` and list it: the new job's state, and what `also` answered.

    Two round trips: the append (behind `before`'s commands, in one pipeline), then one
    pipeline of the activity feed, the index and `also`'s commands, whose replies come
    back in order; on `shared`, each in a round trip with other submissions' of the same
    moment. The state is folded here from the one event the append wrote
    (app/reducer.py mirrors append.lua), not read back. Raises JobExists, and then lists
    nothing, when another request made the job.

    The append carries a key of this call alone: when its reply is lost and redis-py
    sends it again, the script answers `duplicate` for this call's own first write, which
    created the job, so the retry is not taken for another request's (its state is then
    read back, one more round trip). The index is derived: a failure there raises after
    the job exists, and the caller decides whether that matters; a failure of the feed
    is only logged, as for every append.
    """
    # 128 random bits in 22 characters: the entry and the state hash (its `@` field) keep it for the job's life.
    key = f"submitted:{secrets.token_urlsafe(16)}"
    appended = await events.append(job_id, EventType.SUBMITTED, data, key=key, before=before, defer_feed=True,
                                   shared=shared.run if shared is not None else None)
    job = await events.state(job_id) if appended.duplicate else submitted_state(job_id, appended, data, key)
    events.metrics.submitted(job.kind, job.tenant)
    feed_writes = ours = 0

    def queue(pipe: Pipeline) -> None:
        nonlocal feed_writes, ours
        start = len(pipe)
        if appended.feed is not None:
            events.activity.queue_record(pipe, appended.feed)
        feed_writes = len(pipe) - start
        index.queue_add(pipe, job.id, created_ms(job), job.tenant)
        ours = len(pipe) - start
        if also is not None:
            also(pipe)

    if shared is not None:
        replies = await shared.run(queue)
    else:
        async with events.redis.pipeline(transaction=False) as pipe:
            queue(pipe)
            replies = await pipe.execute(raise_on_error=False)
    feed_errors = [reply for reply in replies[:feed_writes] if isinstance(reply, Exception)]
    if appended.feed is not None and feed_errors:
        events.feed_failed(appended.feed, feed_errors[0])
    for reply in replies[feed_writes:]:
        if isinstance(reply, Exception):
            raise reply
    return job, replies[ours:]


def submitted_state(job_id: str, appended: Appended, data: SubmittedData, key: str) -> JobState:
    """The state of a job whose only event is the `submitted` that `appended` wrote."""
    # Not through JSON and back: the fold encodes the params itself (app/reducer.py), and
    # the other fields are a string, an int and a string, so the state is the same either way.
    payload = check_data(EventType.SUBMITTED, data)
    event = Event(id=appended.id, type=EventType.SUBMITTED, at=appended.at, attempt=appended.attempt,
                  data=payload, key=key)
    return JobState.from_hash(job_id, fold([event]))


def created_ms(job: JobState) -> int:
    return round(job.created_at.timestamp() * 1000) if job.created_at else 0


async def index_job(index: JobIndex, job: JobState) -> None:
    """List the job in the global and its tenant's index, by creation time (one round trip).

    Idempotent: a repeat of a submission lists it again, which repairs a creator that
    died before it got here.
    """
    await index.add(job.id, created_ms(job), job.tenant)

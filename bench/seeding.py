"""Jobs written straight into the event log by jobtrail's own EventLog, for the rows that read them.

`running_job` submits and starts a job; `AppendCall` is the EVALSHA of append.lua exactly
as EventLog.append sends it for one progress event (keys, args, the script's SHA), so the
replay row can pipeline 100,000 of them and redis-benchmark can send it as is.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, ProgressData, StartedData, SubmittedData
from jobtrail.keys import Keys

RETENTION_S = 3600


class AppendCall(msgspec.Struct, frozen=True):
    sha: str
    keys: list[str]
    args: list[str]


class _Recorder:
    """Stands in for EventLog's registered script for one call: records it, then makes it."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.keys: list[str] = []
        self.args: list[str] = []

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        self.keys, self.args = list(keys), [str(arg) for arg in args]
        return await self.script(keys=keys, args=args)


def event_log(redis: aioredis.Redis, prefix: str) -> EventLog:
    return EventLog(redis, Keys(prefix), RETENTION_S, activity_maxlen=100_000)


async def running_job(events: EventLog, job_id: str) -> None:
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="bench.progress", params={}, max_attempts=1))
    await events.append(job_id, EventType.STARTED, StartedData(worker="bench", attempt=1), attempt=1)


async def progress_call(events: EventLog, job_id: str) -> AppendCall:
    """Append one progress event to a running job, and the EVALSHA that did it."""
    # EventLog keeps its script private; borrowing it for one call is how the bench gets the
    # arguments exactly as jobtrail builds them, with no copy of that code to drift.
    script = events._append
    recorder: Any = _Recorder(script)
    events._append = recorder
    try:
        data = ProgressData(progress=0.5, current=50, total=100, message="step 50/100")
        await events.append(job_id, EventType.PROGRESS, data, attempt=1)
    finally:
        events._append = script
    return AppendCall(sha=script.sha, keys=recorder.keys, args=recorder.args)


async def long_job(redis: aioredis.Redis, prefix: str, job_id: str, count: int) -> None:
    """A finished job with `count` progress events, appended in pipelined batches."""
    events = event_log(redis, prefix)
    await running_job(events, job_id)
    call = await progress_call(events, job_id)
    for start in range(1, count, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, count - start)):
                pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
            await pipe.execute()
    await events.append(job_id, EventType.SUCCEEDED, {"result": None}, attempt=1)

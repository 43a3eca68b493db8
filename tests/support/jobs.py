"""Jobs written straight into the event log, for tests that read them back; and waiting for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, ProgressData, StartedData, SubmittedData, SucceededData
from jobtrail.keys import Keys


async def running_job(events: EventLog, job_id: str) -> None:
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="demo", params={"n": 1}, max_attempts=1))
    await events.append(job_id, EventType.STARTED, StartedData(worker="w1", attempt=1), attempt=1)


async def progress(events: EventLog, job_id: str, step: int, total: int) -> None:
    await events.append(job_id, EventType.PROGRESS, ProgressData(progress=step / total, current=step, total=total))


async def finished_job(events: EventLog, job_id: str, steps: int = 6) -> None:
    await running_job(events, job_id)
    for step in range(1, steps + 1):
        await progress(events, job_id, step, steps)
    await events.append(job_id, EventType.SUCCEEDED, SucceededData(result={"ok": True}))


async def stream_ids(redis_client: aioredis.Redis, keys: Keys, job_id: str) -> list[str]:
    return [entry_id for entry_id, _ in await redis_client.xrange(keys.events(job_id))]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)

"""The live set: ids of unfinished jobs, each scored by when the reaper should next look at it.

The broker alone cannot notice a job whose worker died on an idle queue, nor one whose
enqueue failed after it was submitted; workers/reaper.py walks this set instead of
scanning every job. Like the job index it is derived and best-effort: the job's hash
stays the truth, and the reaper drops ids whose job finished or is gone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from jobtrail.keys import Keys


def now_ms() -> int:
    return int(time.time() * 1000)


class LiveJobs:
    """The sorted set `keys.live()`: job id -> epoch ms at which it is due for a look."""

    def __init__(self, redis: Redis, keys: Keys, pending_stale_s: float) -> None:
        self.redis = redis
        self.key = keys.live()
        self.pending_stale_ms = int(pending_stale_s * 1000)

    async def track(self, job_id: str) -> None:
        """Watch a new job, due once it could have sat pending too long (one ZADD)."""
        await self.redis.zadd(self.key, {job_id: now_ms() + self.pending_stale_ms})

    def queue_track(self, pipe: Pipeline, job_id: str) -> None:
        """`track`, queued on a pipeline of the caller's."""
        pipe.zadd(self.key, {job_id: now_ms() + self.pending_stale_ms})

    async def forget(self, *job_ids: str) -> None:
        """Stop watching jobs that finished or are gone (one ZREM)."""
        if job_ids:
            await self.redis.zrem(self.key, *job_ids)

    async def due(self, at_ms: int, limit: int) -> list[str]:
        """Up to `limit` ids due at or before `at_ms`, most overdue first (one ZRANGE)."""
        return await self.redis.zrangebyscore(self.key, "-inf", at_ms, start=0, num=limit)

    async def postpone(self, until_ms: Mapping[str, int]) -> None:
        """Look at each job again at its time (one ZADD); tracks an id not yet tracked."""
        if until_ms:
            await self.redis.zadd(self.key, dict(until_ms))

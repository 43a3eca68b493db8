"""The live set: ids of unfinished jobs, each scored by when the reaper should next look at it.

The broker alone cannot notice a job whose worker died on an idle queue, nor one whose
enqueue failed after it was submitted; workers/reaper.py walks this set instead of
scanning every job. Like the job index it is derived and best-effort: the job's hash
stays the truth, and the reaper drops ids whose job finished or is gone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from jobtrail.events import TERMINAL_STATES
from jobtrail.keys import Keys

# Live ids read, and hashes looked up, per round trip when counting.
_COUNT_PAGE = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


class LiveJobs:
    """The sorted set `keys.live()`: job id -> epoch ms at which it is due for a look."""

    def __init__(self, redis: Redis, keys: Keys, pending_stale_s: float) -> None:
        self.redis = redis
        self.keys = keys
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

    async def counts(self, *, by_tenant: bool) -> Counter[tuple[str, str | None]]:
        """How many live jobs are in each state (and tenant, when `by_tenant`): `jobtrail_jobs`.

        The set holds ids only, so the states come from the jobs' hashes: one ZSCAN page
        and one pipeline of HMGETs per 1,000 live jobs. That is the unfinished jobs alone,
        never the finished ones nor a scan of the keyspace. An id whose job finished or is
        gone (the reaper forgets such ids lazily) is not counted; ZSCAN may return an id
        twice, and it is counted once.
        """
        ids = {job_id async for job_id, _ in self.redis.zscan_iter(self.key, count=_COUNT_PAGE)}
        ordered = list(ids)
        counts: Counter[tuple[str, str | None]] = Counter()
        for start in range(0, len(ordered), _COUNT_PAGE):
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ordered[start : start + _COUNT_PAGE]:
                    pipe.hmget(self.keys.job(job_id), "state", "tenant")
                replies = await pipe.execute()
            for state, tenant in replies:
                if state is not None and state not in TERMINAL_STATES:
                    counts[state, (tenant or None) if by_tenant else None] += 1
        return counts

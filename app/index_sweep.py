"""The index sweep: drops the job index entries of jobs whose keys expired or were deleted.

The job indexes (app/index.py) are written at submission and never told when a job's
keys expire by retention, so without this they would keep every job for ever, and a
listing would wade through dead entries. The sweeper (app/sweeper.py) calls `prune`
once per pass, in every API process.

Each pass checks at most `per_pass` entries: the global index first, then each tenant's
(from `keys.tenants()`), oldest first, `batch` entries per step, each step one ZRANGE,
one pipelined EXISTS per entry's state hash, and one ZREM of what is gone. Where a pass
stops, the next one goes on (the cursor is the rank reached in the current index, kept
in this object); when every index has been walked, the next pass starts over. A
concurrent removal (a listing dropping an entry, a delete) can shift ranks so a pass
skips an entry; the next cycle meets it. An entry is only added after its job's
`submitted` event, so an entry whose hash is missing is one whose job is gone.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from jobtrail.keys import Keys

log = logging.getLogger(__name__)


class IndexSweep:
    """Bounded, resumable pruning of the job indexes (the global one and every tenant's)."""

    def __init__(self, redis: Redis, keys: Keys, *, per_pass: int, batch: int = 500) -> None:
        self.redis = redis
        self.keys = keys
        self.per_pass = per_pass
        self.batch = max(1, min(batch, per_pass))
        self._todo: list[str] = []  # indexes left in the current cycle; the first is being walked
        self._rank = 0  # where the walk of `_todo[0]` stands

    async def prune(self) -> int:
        """One pass: checks at most `per_pass` entries, returns how many it removed."""
        checked = removed = 0
        started_cycle = False
        while checked < self.per_pass:
            if not self._todo:
                if started_cycle:
                    break  # every index walked within this pass: the rest waits for the next
                self._todo = [self.keys.index(), *await self._tenant_indexes()]
                self._rank, started_cycle = 0, True
            step = min(self.batch, self.per_pass - checked)
            walked, gone = await self._step(self._todo[0], step)
            checked += walked
            removed += gone
            if walked < step:
                self._todo.pop(0)
                self._rank = 0
        if removed:
            log.info("removed %d job index entries of expired or deleted jobs", removed)
        return removed

    async def _tenant_indexes(self) -> list[str]:
        """Every tenant's index key (one round trip)."""
        tenants = await self.redis.smembers(self.keys.tenants())
        return [self.keys.tenant_index(tenant) for tenant in sorted(tenants)]

    async def _step(self, key: str, count: int) -> tuple[int, int]:
        """Check `count` entries of `key` from the cursor on; (checked, removed). Two or three round trips."""
        ids = await self.redis.zrange(key, self._rank, self._rank + count - 1)
        if not ids:
            return 0, 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(self.keys.job(job_id))
            found = await pipe.execute()
        gone = [job_id for job_id, exists in zip(ids, found, strict=True) if not exists]
        if gone:
            await self.redis.zrem(key, *gone)
        # The removed entries no longer take up ranks; the kept ones do.
        self._rank += len(ids) - len(gone)
        return len(ids), len(gone)

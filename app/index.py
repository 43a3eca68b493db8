"""The job index: sorted sets of job ids by creation time, for listing.

There is one set of every job (what an admin lists) and one per tenant (what the
tenant lists), written together at submission.

It is derived and best-effort: a job whose keys expired or were deleted leaves an
entry behind. Listing drops those it meets, and the sweeper (app/index_sweep.py) walks
every index in the background and drops the rest. The per-job hash stays the truth.
Each tenant with an index is recorded in `keys.tenants()` so the sweep can find them.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from jobtrail.errors import InvalidRequest
from jobtrail.jobstate import JobState
from jobtrail.keys import Keys


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a listing page stopped: the last job shown, by (created ms, id)."""

    score: int
    job_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(msgspec.json.encode(self)).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        try:
            return msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), type=cls)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise InvalidRequest("malformed cursor: pass the `next` value of the previous page unchanged") from None


class JobIndex:
    """Newest-first listing of jobs, filtered by state and kind."""

    # Ids read per round trip while filling a filtered page.
    BATCH = 200

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def add(self, job_id: str, created_ms: int, tenant: str | None = None) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_add(pipe, job_id, created_ms, tenant)
            await pipe.execute()

    def queue_add(self, pipe: Pipeline, job_id: str, created_ms: int, tenant: str | None = None) -> None:
        """Queue `add`'s writes on a pipeline of the caller's."""
        pipe.zadd(self.keys.index(), {job_id: created_ms})
        if tenant:
            pipe.zadd(self.keys.tenant_index(tenant), {job_id: created_ms})
            pipe.sadd(self.keys.tenants(), tenant)

    async def remove(self, job_id: str, tenant: str | None = None) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.index(), job_id)
            if tenant:
                pipe.zrem(self.keys.tenant_index(tenant), job_id)
            await pipe.execute()

    async def page(
        self,
        *,
        limit: int,
        cursor: Cursor | None = None,
        state: str | None = None,
        kind: str | None = None,
        tenant: str | None = None,
        scan_limit: int = 5000,
    ) -> tuple[list[JobState], Cursor | None]:
        """One page, newest first, and the cursor of the next page (None at the end).

        With `tenant`, only that tenant's jobs; without, every job.

        Filters are applied to the jobs' hashes, so a selective filter may scan many
        index entries; at most `scan_limit` per call, after which a shorter page is
        returned with a cursor to continue, unless nothing is left after it (one more
        round trip to look): a page never ends the listing with a `next` to nowhere.
        """
        key = self.keys.tenant_index(tenant) if tenant else self.keys.index()
        found: list[JobState] = []
        scanned = 0
        last = cursor
        while len(found) < limit and scanned < scan_limit:
            batch = await self._ids_after(key, last, self.BATCH)
            if not batch:
                return found, None
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _ in batch:
                    pipe.hgetall(self.keys.job(job_id))
                    pipe.pexpiretime(self.keys.job(job_id))
                replies = await pipe.execute()
            stale = []
            for (job_id, score), fields, expires_ms in zip(batch, replies[::2], replies[1::2], strict=True):
                scanned += 1
                last = Cursor(score, job_id)
                if not fields.get("state"):
                    stale.append(job_id)
                    continue
                job = JobState.from_hash(job_id, fields, expires_ms)
                if (state is None or job.state == state) and (kind is None or job.kind == kind):
                    found.append(job)
                    if len(found) == limit:
                        break
            if stale:
                await self.redis.zrem(key, *stale)
        if len(found) < limit and last is not None and not await self._ids_after(key, last, 1):
            # Stopped at the scan limit exactly where the index ends (say every entry
            # scanned was an expired job's): there is no next page to point to.
            return found, None
        return found, last

    async def _ids_after(self, key: str, cursor: Cursor | None, count: int) -> list[tuple[str, int]]:
        """Up to `count` (id, score) pairs older than the cursor, newest first (one or two round trips)."""
        if cursor is None:
            rows = await self.redis.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
            return [(job_id, int(score)) for job_id, score in rows]
        # Ids sharing the cursor's score sort by id (descending in a reverse range),
        # so skip those not below the cursor's id; fetch enough to get past them.
        ties = await self.redis.zcount(key, cursor.score, cursor.score)
        rows = await self.redis.zrevrangebyscore(
            key, cursor.score, "-inf", start=0, num=count + ties, withscores=True
        )
        result = [
            (job_id, int(score))
            for job_id, score in rows
            if int(score) < cursor.score or job_id < cursor.job_id
        ]
        return result[:count]

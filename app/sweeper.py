"""Removes what jobs whose keys expired by retention or were deleted leave behind.

Each pass removes their artifact folders, then prunes a bounded share of the job
indexes (app/index_sweep.py).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobtrail.artifacts import ArtifactStore
from jobtrail.index_sweep import IndexSweep
from jobtrail.keys import Keys

log = logging.getLogger(__name__)


async def sweep_once(store: ArtifactStore, redis: Redis, keys: Keys, *, grace_s: float = 60.0) -> list[str]:
    """One pass: the ids whose artifact folders were removed (one pipelined round trip)."""
    ids = await asyncio.to_thread(store.job_ids)
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(keys.job(job_id))
        exists = await pipe.execute()
    live = {job_id for job_id, found in zip(ids, exists, strict=True) if found}
    return await asyncio.to_thread(store.sweep, live, grace_s=grace_s)


async def run_sweeper(store: ArtifactStore, index_sweep: IndexSweep, redis: Redis, keys: Keys, every_s: float) -> None:
    """Sweep every `every_s` seconds until cancelled; Redis errors wait for the next pass."""
    while True:
        try:
            await sweep_once(store, redis, keys)
        except RedisError as exc:
            log.warning("artifact sweep skipped: %s", exc)
        except OSError:
            log.exception("artifact sweep failed")
        try:
            await index_sweep.prune()
        except RedisError as exc:
            log.warning("job index sweep skipped: %s", exc)
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            # A cancellation that lands mid-call can be swallowed below us (as in
            # app/hub.py); sleeping now would hold up the app's shutdown for ever.
            raise asyncio.CancelledError
        await asyncio.sleep(every_s)

"""A job lease: at most one worker runs a job at a time.

The lease is a per-job key holding the runner's token with a short TTL that a
heartbeat renews while the job runs. A second delivery of the job finds it held and
drops itself; a job whose worker died has its lease expire and can be taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from importlib import resources

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_SCRIPT = resources.files("workers").joinpath("lease.lua").read_text()


class Lease:
    def __init__(self, redis: Redis, key: str, owner: str, ttl_s: float) -> None:
        self.redis = redis
        self.key = key
        self.token = f"{owner}:{uuid.uuid4().hex[:8]}"
        self.ttl_ms = max(int(ttl_s * 1000), 100)
        self.lost = False
        self._script = redis.register_script(_SCRIPT)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (one SET NX)."""
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        return bool(await self._script(keys=[self.key], args=["renew", self.token, self.ttl_ms]))

    async def release(self) -> None:
        await self._script(keys=[self.key], args=["release", self.token, 0])

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[Lease]:
        """Renew the lease every third of its TTL until the block ends, then release it."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            yield self
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            try:
                await self.release()
            except RedisError as exc:
                log.warning("could not release lease %s (%s); it expires by itself", self.key, exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not await self.renew():
                    self.lost = True
                    log.warning("lease %s was lost; the job will be left to its new holder", self.key)
                    return
            except RedisError as exc:
                # Keep trying: the lease survives a blip shorter than its TTL.
                log.warning("could not renew lease %s: %s", self.key, exc)

"""Per-tenant limits, counted in Redis so that every API process shares them.

Submissions: a counter per tenant and minute-long window (INCR, then EXPIRE). SSE
connections: a sorted set of slots, each expiring unless its stream renews it, so a
killed API process does not hold its tenant's slots for ever (app/sse_slots.lua).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.errors import RateLimited
from app.keys import Keys

log = logging.getLogger(__name__)

_SLOT_SCRIPT = resources.files("app").joinpath("sse_slots.lua").read_text()
WINDOW_S = 60


class SubmitRate:
    def __init__(self, redis: Redis, keys: Keys, per_minute: int) -> None:
        self.redis = redis
        self.keys = keys
        self.per_minute = per_minute  # 0: unlimited

    async def check(self, scope: str) -> None:
        """Count one submission; RateLimited once the window's count exceeds the limit (one round trip)."""
        if not self.per_minute:
            return
        now = time.time()
        window = int(now // WINDOW_S)
        key = self.keys.submit_window(scope, window)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
        if count > self.per_minute:
            retry_after = max(1, int((window + 1) * WINDOW_S - now + 0.999))
            raise RateLimited(
                f"more than {self.per_minute} submissions this minute; retry after {retry_after} s", retry_after
            )


class SseSlots:
    def __init__(self, redis: Redis, keys: Keys, limit: int, ping_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.limit = limit  # 0: unlimited
        # A stream yields at least a ping every ping_s, and renews its slot then.
        self.ttl_ms = int(max(60.0, 4 * ping_s) * 1000)
        self._take = redis.register_script(_SLOT_SCRIPT)

    async def take(self, scope: str) -> str | None:
        """A slot for one SSE connection of `scope` (None when unlimited); RateLimited at the limit."""
        if not self.limit:
            return None
        slot = uuid.uuid4().hex
        now = int(time.time() * 1000)
        if not await self._take(keys=[self.keys.sse_slots(scope)], args=[now, self.ttl_ms, self.limit, slot]):
            raise RateLimited(f"this tenant already has {self.limit} open event streams; close one first", 5)
        return slot

    async def held(self, scope: str, slot: str | None, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`stream`, renewing `slot` as it goes and giving it back when the stream ends or is dropped."""
        if slot is None:
            async for chunk in stream:
                yield chunk
            return
        key = self.keys.sse_slots(scope)
        renewed = time.monotonic()
        try:
            async for chunk in stream:
                yield chunk
                if time.monotonic() - renewed > self.ttl_ms / 3000:
                    renewed = time.monotonic()
                    await self._renew(key, slot)
        finally:
            # Shielded: a client that leaves gets its stream cancelled, and inside the
            # cancelled scope an unshielded await would be cancelled too, keeping the slot.
            with anyio.move_on_after(5, shield=True):
                try:
                    await self.redis.zrem(key, slot)
                except RedisError as exc:
                    log.warning("could not give back SSE slot of %s (%s); it expires by itself", scope, exc)

    async def _renew(self, key: str, slot: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {slot: int(time.time() * 1000) + self.ttl_ms}, xx=True)
                pipe.pexpire(key, self.ttl_ms)
                await pipe.execute()
        except RedisError as exc:
            # The stream itself notices an outage; a slot not renewed merely expires.
            log.warning("could not renew an SSE slot (%s)", exc)

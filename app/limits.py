"""Per-tenant limits, counted in Redis so that every API process shares them.

Submissions: a counter of jobs created per tenant and minute-long window (INCR, then
EXPIRE; DECR for a request that created nothing). SSE
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
    """Jobs created per tenant and minute-long window.

    Only jobs actually created count: a request takes a place in the window before it
    creates (so one over the limit creates nothing and gets 429), and gives it back when
    it created nothing (a 4xx, an idempotent repeat, a Redis failure). Taking first, not
    merely looking, keeps parallel submissions from slipping past the limit together.
    """

    def __init__(self, redis: Redis, keys: Keys, per_minute: int) -> None:
        self.redis = redis
        self.keys = keys
        self.per_minute = per_minute  # 0: unlimited

    async def take(self, scope: str) -> str | None:
        """A place for one job in the current window (its counter's key; None when unlimited).

        RateLimited once the window is full, with nothing counted. One round trip, two
        when refused.
        """
        if not self.per_minute:
            return None
        now = time.time()
        window = int(now // WINDOW_S)
        key = self.keys.submit_window(scope, window)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
        if count > self.per_minute:
            await self.give_back(key)
            retry_after = max(1, int((window + 1) * WINDOW_S - now + 0.999))
            raise RateLimited(
                f"more than {self.per_minute} submissions this minute; retry after {retry_after} s", retry_after
            )
        return key

    async def give_back(self, place: str | None) -> None:
        """Return a place taken for a request that created no job (one round trip, best-effort)."""
        if place is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.decr(place)
                # Again, so a counter that expired meanwhile is not left behind for ever.
                pipe.expire(place, WINDOW_S * 2)
                await pipe.execute()
        except RedisError as exc:
            log.warning("could not give back a submission place (%s); it expires with its window", exc)


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

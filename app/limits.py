"""Per-tenant limits, counted in Redis so that every API process shares them.

Submissions: a counter of jobs created per tenant and minute-long window (INCR and
EXPIRE in one script, app/submit_window.lua; DECR for a request that created nothing).
SSE connections: a sorted set of slots, each expiring unless its process renews it, so a
killed API process does not hold its tenant's slots for long (app/sse_slots.lua).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import anyio
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from jobtrail.batching import SharedPipeline
from jobtrail.errors import RateLimited
from jobtrail.keys import Keys

log = logging.getLogger(__name__)

_SLOT_SCRIPT = resources.files("jobtrail").joinpath("sse_slots.lua").read_text()
_WINDOW_SCRIPT = resources.files("jobtrail").joinpath("submit_window.lua").read_text()
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
        self._take = redis.register_script(_WINDOW_SCRIPT)
        # Concurrent submissions take their places in one round trip.
        self._shared = SharedPipeline(redis)

    async def take(self, scope: str) -> str | None:
        """A place for one job in the current window (its counter's key; None when unlimited).

        RateLimited once the window is full, with nothing counted. One EVALSHA
        (app/submit_window.lua), refused or not, in a round trip shared with other
        submissions of the moment (app/batching.py); a Redis that lost the script gets it
        loaded, one more.
        """
        if not self.per_minute:
            return None
        now = time.time()
        window = int(now // WINDOW_S)
        key = self.keys.submit_window(scope, window)
        args = (WINDOW_S * 2, self.per_minute)
        (taken,) = await self._shared.run(
            # execute_command, not evalsha: a Cluster pipeline routes it by its key all the same.
            lambda pipe: pipe.execute_command("EVALSHA", self._take.sha, 1, key, *args)
        )
        if isinstance(taken, NoScriptError):
            taken = await self._take(keys=[key], args=list(args))
        elif isinstance(taken, Exception):
            raise taken
        if not taken:
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
    """Each tenant's open SSE connections, counted in Redis so that the limit holds across API processes.

    A slot is a member of the tenant's sorted set, scored by when it expires. One renewer
    task per process (`start`, from the app's lifespan) pushes the expiry of every slot the
    process holds forward, all of them in one pipelined round trip every third of the TTL.
    It does not depend on any stream being read: a client that stops reading keeps its
    connection open, so it keeps its slot, and cannot get more by letting slots expire. A
    slot is given back when its response ends, however it ends (`holding`); the slots of a
    killed process expire within `ttl_s`.
    """

    def __init__(self, redis: Redis, keys: Keys, limit: int, ttl_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.limit = limit  # 0: unlimited
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.renew_s = self.ttl_ms / 3000
        self._take = redis.register_script(_SLOT_SCRIPT)
        # Concurrent SSE requests (W1's observers connect at once) take their slots in one round trip.
        self._shared = SharedPipeline(redis)
        self._held: defaultdict[str, set[str]] = defaultdict(set)  # scope -> slots of open responses
        # A renewal in flight must not put back a slot given back meanwhile.
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def take(self, scope: str) -> str | None:
        """A slot for one SSE connection of `scope` (None when unlimited); RateLimited at the limit.

        One EVALSHA, in a round trip shared with other requests' of the moment (app/batching.py).
        """
        if not self.limit:
            return None
        slot = uuid.uuid4().hex
        key, args = self.keys.sse_slots(scope), (int(time.time() * 1000), self.ttl_ms, self.limit, slot)
        (taken,) = await self._shared.run(lambda pipe: pipe.execute_command("EVALSHA", self._take.sha, 1, key, *args))
        if isinstance(taken, NoScriptError):
            taken = await self._take(keys=[key], args=list(args))
        elif isinstance(taken, Exception):
            raise taken
        if not taken:
            raise RateLimited(f"this tenant already has {self.limit} open event streams; close one first", 5)
        return slot

    @asynccontextmanager
    async def holding(self, scope: str, slot: str | None) -> AsyncIterator[None]:
        """Keep `slot` renewed while the block runs, and give it back when it ends (one ZREM then)."""
        if slot is None:
            yield
            return
        self._held[scope].add(slot)
        try:
            yield
        finally:
            # Shielded: a response cut short may be ending inside a cancelled scope, where
            # an unshielded await would be cancelled too, keeping the slot.
            with anyio.move_on_after(5, shield=True):
                await self._give_back(scope, slot)

    async def give_back(self, scope: str, slot: str | None) -> None:
        """Give back a slot taken for a response that is not sent after all (one ZREM; none for None)."""
        if slot is not None:
            await self._give_back(scope, slot)

    async def _give_back(self, scope: str, slot: str) -> None:
        held = self._held.get(scope)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._held[scope]
        try:
            async with self._lock:
                await self.redis.zrem(self.keys.sse_slots(scope), slot)
        except RedisError as exc:
            log.warning("could not give back SSE slot of %s (%s); it expires by itself", scope, exc)

    @property
    def held_count(self) -> int:
        return sum(len(slots) for slots in self._held.values())

    async def renew(self) -> None:
        """Push the expiry of every slot this process holds forward (one pipelined round trip; none if it holds none).

        A slot that expired meanwhile (the renewer was held up past the TTL) is put back:
        its connection is still open.
        """
        if not self._held:
            return
        async with self._lock:
            expires = int(time.time() * 1000) + self.ttl_ms
            async with self.redis.pipeline(transaction=False) as pipe:
                for scope, slots in self._held.items():
                    key = self.keys.sse_slots(scope)
                    pipe.zadd(key, dict.fromkeys(slots, expires))
                    pipe.pexpire(key, self.ttl_ms)
                await pipe.execute()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobtrail-sse-slots")

    async def stop(self) -> None:
        # The flag too, not only cancel(): redis-py can lose a cancellation that lands
        # while it reconnects (as in the hub).
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.renew_s)
            try:
                await self.renew()
            except RedisError as exc:
                # Streams notice an outage themselves; slots not renewed merely expire.
                log.warning("could not renew %d SSE slots (%s)", self.held_count, exc)
            except Exception:
                log.exception("renewing SSE slots failed")

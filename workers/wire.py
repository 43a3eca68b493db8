"""One connection, held while busy, for the worker's shared round trips: redis-py's pipeline without its per-call toll.

The runner's SharedPipeline (app/batching.py) has one round trip out at a time, and a busy
worker sends one after another. Through redis-py's pipeline each of them takes a
connection from the pool and gives it back (a lock, a condition, an event, observability
records), makes a task for the send's timeout, and opens a timeout around the read of each
reply: measured on this kind of machine, ~110 µs of CPU a round trip and ~12 µs a command,
about a third of a worker's CPU per trivial job. Here the connection is held while round
trips follow one another (given back to the pool after IDLE_S without one), the commands
are packed as redis-py packs them and written at once, and the replies are read straight
from the connection's hiredis parser under one timeout for the round trip: the same
bytes, the same replies (errors as values, redis-py's response callbacks), the same one
quick retry of the round trip on a connection error or timeout (the connection's Retry).

Only for one server, on a client of app/store.py's (its connections pack with hiredis)
speaking RESP2; Sentinel's connections check for a demoted master on their reads, a
Cluster routes each command, and the embedded mode's fakeredis has no socket, so those get
redis-py's own pipeline, as before.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import hiredis
from redis.asyncio.client import EMPTY_RESPONSE, NEVER_DECODE, Pipeline
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobtrail.store import HiredisPacking

log = logging.getLogger(__name__)

Commands = list[tuple[tuple[Any, ...], dict[str, Any]]]


def _lean_capable(redis: Any) -> bool:
    """A one-server client of app/store.py's (its connections pack with hiredis), which this module can drive."""
    pool = getattr(redis, "connection_pool", None)
    if not isinstance(pool, ConnectionPool) or isinstance(pool, SentinelConnectionPool):
        return False
    return issubclass(pool.connection_class, HiredisPacking) and pool.connection_kwargs.get("protocol") in (
        None, 2, "2"
    )


class Wire:
    """Makes pipelines that run on one connection held while busy; for callers with one round trip out at a time.

    A client `SharedPipeline` can be given instead of the Redis client itself: only
    `pipeline()` is asked of it. A round trip that comes while another is out (not the
    shared pipeline's way, yet allowed) takes a connection of its own from the pool.
    """

    IDLE_S = 0.05

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.lean = _lean_capable(redis)
        self._held: Any = None
        self._busy = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    def pipeline(self, transaction: bool = False) -> Pipeline:
        if not self.lean or transaction:
            return self.redis.pipeline(transaction=transaction)
        return WirePipeline(self, self.redis.connection_pool, self.redis.response_callbacks)

    async def exchange(self, commands: Commands, callbacks: Any) -> list[Any]:
        """Send `commands` and read their replies, errors as values (one round trip, retried once)."""
        pool = self.redis.connection_pool
        own = self._busy
        if own:
            conn = await pool.get_connection()
        else:
            self._busy = True
            if self._held is None:
                try:
                    self._held = await pool.get_connection()
                except BaseException:
                    self._busy = False
                    raise
            conn = self._held
        try:
            # The round trip disconnected already; the Retry's own failure step has nothing left to do.
            replies = await conn.retry.call_with_retry(lambda: self._round_trip(conn, commands), _nothing)
        finally:
            if own:
                await pool.release(conn)
            else:
                self._rested()
        return await _with_callbacks(replies, commands, callbacks)

    async def _round_trip(self, conn: Any, commands: Commands) -> list[Any]:
        if not conn.is_connected:
            await conn.connect()
        await conn.check_health()
        packed = _packed(conn, commands)
        parser = conn._parser
        try:
            async with asyncio.timeout(conn.socket_timeout):
                conn._writer.writelines(packed)
                await conn._writer.drain()
                replies = [
                    await parser.read_response(disable_decoding=NEVER_DECODE in options) for _, options in commands
                ]
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"Timeout in a round trip to {conn._host_error()}") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Error in a round trip to {conn._host_error()}: {exc.args}") from exc
        except BaseException:
            # Cancelled or failed mid-read: the replies still due would answer the next round trip.
            await conn.disconnect(nowait=True)
            raise
        if conn.health_check_interval:
            conn.next_health_check = asyncio.get_running_loop().time() + conn.health_check_interval
        return replies

    def _rested(self) -> None:
        """The held connection's round trip is over; it goes back to the pool once IDLE_S pass without another."""
        self._busy = False
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self.IDLE_S, self._idle)

    def _idle(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        if self._held is None:
            return
        waited = loop.time() - self._last
        if self._busy or waited < self.IDLE_S:
            self._timer = loop.call_later(self.IDLE_S - waited if not self._busy else self.IDLE_S, self._idle)
            return
        conn, self._held = self._held, None
        task = asyncio.create_task(self.redis.connection_pool.release(conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)


def _packed(conn: Any, commands: Commands) -> list[bytes]:
    """The round trip's bytes: one hiredis pack per command, joined.

    What the connection's HiredisPacking would send command by command, without its checks
    and redis-py's buffer bookkeeping around each; a command it would hand to redis-py's
    own packer (a first argument of several words, an argument hiredis refuses) sends the
    whole round trip through the connection's packer instead.
    """
    chunks = []
    try:
        for args, _ in commands:
            if " " in args[0]:
                break
            chunks.append(hiredis.pack_command(args))
        else:
            return [b"".join(chunks)]
    except (TypeError, ValueError):
        pass
    return conn.pack_commands([args for args, _ in commands])


async def _nothing(_error: Exception) -> None:
    return None


async def _with_callbacks(replies: list[Any], commands: Commands, callbacks: Any) -> list[Any]:
    """The replies as redis-py's pipeline gives them: its response callbacks applied, errors left as values."""
    out = []
    for raw, (args, options) in zip(replies, commands, strict=True):
        if isinstance(raw, ResponseError):
            out.append(options.get(EMPTY_RESPONSE, raw))
            continue
        callback = callbacks.get(args[0])
        if callback is None:
            out.append(raw)
            continue
        extra = {k: v for k, v in options.items() if k not in (EMPTY_RESPONSE, NEVER_DECODE, "keys")}
        reply = callback(raw, **extra)
        out.append(await reply if inspect.isawaitable(reply) else reply)
    return out


class WirePipeline(Pipeline):
    """redis-py's non-transactional pipeline whose `execute` goes through a Wire."""

    def __init__(self, wire: Wire, pool: Any, callbacks: Any) -> None:
        super().__init__(pool, callbacks, False, None)
        self.wire = wire

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        if not stack:
            return []
        if self.scripts:  # a registered script queued by name needs redis-py's SCRIPT EXISTS first
            return await super().execute(raise_on_error)
        try:
            replies = await self.wire.exchange(stack, self.response_callbacks)
        finally:
            await self.reset()
        if raise_on_error:
            self.raise_first_error(stack, replies)
        return replies

"""Redis clients for each topology: a pooled one for requests, dedicated ones for blocking reads.

REDIS_URL (app/topology.py) says what they talk to. One server: redis-py's own URL. Sentinel:
the master the sentinels name, looked up again whenever a connection is made, so a failover
is followed by reconnecting (redis-py's `Sentinel.master_for`). Cluster: redis-py's
`RedisCluster`, from the startup nodes given; it discovers the rest and follows MOVED/ASK
(app/cluster.py makes it recover from a failover under concurrent load).

The bounds are the same everywhere: connect and command timeouts of `redis_timeout_s`, one
quick retry, at most `pool_size` connections, counted per node on a Cluster. One
difference: a Cluster node's pool does not queue a caller when it is full, it raises
MaxConnectionsError (a ConnectionError, so a request answers 503 rather than wait).

With no REDIS_URL every client talks to one in-process fakeredis server that runs the same
Lua script; that mode keeps nothing and says so at start (see app/cli.py).
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from jobtrail.cluster import ClusterLayoutUnavailable, FailoverAwareCluster
from jobtrail.config import Settings
from jobtrail.topology import Topology, parse_topology

# ClusterLayoutUnavailable is the hub's too (app/wakes.py imports it from here).
__all__ = ["ClusterLayoutUnavailable", "FailoverAwareCluster", "Store"]


class HiredisPacking:
    """Packs commands with hiredis's C packer, as redis-py's sync client does; its asyncio one packs in Python.

    On this kind of machine that was ~30 µs for an append's EVALSHA against ~4 µs. The bytes
    are the same; a first argument of several words (`CLIENT SETNAME`), which redis-py
    splits, and any argument hiredis refuses (a bool, None, a lone surrogate) go to redis-py's
    packer, which splits or raises its own errors as before.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0] if args else None
        if isinstance(first, str | bytes) and (" " in first if isinstance(first, str) else b" " in first):
            return super().pack_command(*args)  # type: ignore[misc]
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            return super().pack_command(*args)  # type: ignore[misc]


# Replies redis-py acts on: a lost connection (its parser raises), an error reply (a Sentinel
# connection turns READONLY into a reconnect), a RESP3 push (its parser reads on).
_PUSH: tuple[type, ...] = (hiredis.PushNotification,) if hasattr(hiredis, "PushNotification") else ()
_CHECKED = (redis_errors.ConnectionError, redis_errors.ResponseError, *_PUSH)


class _Replay:
    """Stands in for a hiredis reader for one `gets`: the reply taken out to look at it, then the reader is back."""

    __slots__ = ("parser", "reader", "reply")

    def __init__(self, parser: Any, reader: hiredis.Reader, reply: Any) -> None:
        self.parser = parser
        self.reader = reader
        self.reply = reply

    def gets(self, *_: Any) -> Any:
        self.parser._reader = self.reader
        return self.reply


class BufferedReplies:
    """Reads a reply that hiredis already holds whole without arming a timeout for it.

    redis-py reads every reply under `asyncio.timeout(socket_timeout)`, a timer armed and
    cancelled per reply even when the reply is in its buffer, as all but the first of a
    pipeline's usually are (they come in one socket read): py-spy put those timers at ~13 %
    of a submission's CPU in the API. A reply not yet whole in the buffer is read as before,
    under the timeout, so a stalled Redis is cut off exactly as it was. A buffered reply gets
    what redis-py does after any read (`_plain`); the few it acts on (errors, pushes) go
    through redis-py's own read and the connection class's (`_Replay` hands them back).
    """

    async def read_response(
        self, disable_decoding: bool = False, timeout: float | None = None, *, disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        parser = self._parser  # type: ignore[attr-defined]
        reader = getattr(parser, "_reader", None)
        if (timeout is None and not disable_decoding and type(reader) is hiredis.Reader
                and getattr(parser, "_connected", False) and reader.has_data()):
            try:
                reply = reader.gets()
            except BaseException:  # a protocol error: the connection is unusable, as redis-py's read decides
                if disconnect_on_error:
                    await self.disconnect(nowait=True)  # type: ignore[attr-defined]
                raise
            if reply is not NOT_ENOUGH_DATA:
                if not isinstance(reply, _CHECKED) and not (
                    type(reply) is list and reply and isinstance(reply[0], redis_errors.ConnectionError)
                ):
                    return self._plain(reply)
                # Read by redis-py's own code, handed back by _Replay; a push under the timeout.
                parser._reader = _Replay(parser, reader, reply)
                if not isinstance(reply, _PUSH):
                    timeout = math.inf  # redis-py's "no timeout for this read"
        return await super().read_response(  # type: ignore[misc]
            disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
        )

    def _plain(self, reply: Any) -> Any:
        """What redis-py's `read_response` does with a reply that is not an error."""
        if self.health_check_interval:  # type: ignore[attr-defined]
            self.next_health_check = asyncio.get_running_loop().time() + self.health_check_interval  # type: ignore[attr-defined]
        return reply


_PACKING: dict[type, type] = {}


def pack_with_hiredis(pool: Any) -> None:
    """Make `pool`'s new connections pack with hiredis and read buffered replies without a timer each.

    Its connection class (TLS or not) mixed with HiredisPacking and BufferedReplies.
    """
    base = pool.connection_class
    if issubclass(base, HiredisPacking) or pool.connection_kwargs.get("encoding", "utf-8") != "utf-8":
        return
    if pool.connection_kwargs.get("encoding_errors", "strict") != "strict":
        return
    if base not in _PACKING:
        _PACKING[base] = type(f"HiredisPacking{base.__name__}", (HiredisPacking, BufferedReplies, base), {})
    pool.connection_class = _PACKING[base]


class WaitingPool(BlockingConnectionPool):
    """redis-py's BlockingConnectionPool, whose waiting machinery runs only when someone waits.

    Its `get_connection` takes a lock, a timer and a condition for every command, even with
    connections free; for an API's request that was a tenth of its CPU. With nobody queued
    and a connection to be had, one is taken as the plain pool takes it (checked as usual,
    `ensure_connection`); otherwise the caller queues behind the others as before, so a
    waiter is never overtaken and the wait stays bounded by the pool's timeout.
    """

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        condition = self._condition
        # Queued: on the condition (waiting for a connection) or on its lock (about to look).
        queued = getattr(condition, "_waiters", None) or getattr(getattr(condition, "_lock", None), "_waiters", None)
        if condition.locked() or queued or not self.can_get_connection():
            return await super().get_connection()
        connection = self.get_available_connection()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


class BlockingSentinelConnectionPool(SentinelConnectionPool, WaitingPool):
    """The master's pool that waits (up to its timeout) for a free connection, as one server's does.

    redis-py's SentinelConnectionPool is a plain ConnectionPool, which raises at once when
    full; the mix takes the master lookup from the first and the wait from the second.
    Each pool has a Sentinel of its own (its connections to the sentinels), closed with it.
    """

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


class Store:
    """Opens the Redis clients one process needs, on the topology REDIS_URL names."""

    # The pool sizes JOBTRAIL_REDIS_POOL_SIZE=0 (the default) stands for. One server's (or a
    # Sentinel master's) pool queues a caller until a connection is free, so a handful keeps
    # an API process's connections constant under any load; a Cluster node's pool refuses a
    # caller when full (a 503), so it keeps room for a request's burst.
    POOL_SIZE = 6
    CLUSTER_POOL_SIZE = 32

    def __init__(self, settings: Settings, *, role: str = "api") -> None:
        self.settings = settings
        self.client_name = f"jobtrail-{role}-{os.getpid()}"
        self._fake_server = None
        self.topology: Topology | None = None
        if settings.embedded:
            import fakeredis

            self._fake_server = fakeredis.FakeServer()
        else:
            assert settings.redis_url is not None
            self.topology = parse_topology(settings.redis_url)

    @property
    def kind(self) -> str:
        """`single`, `sentinel` or `cluster` (`single` when embedded)."""
        return self.topology.kind if self.topology else "single"

    def pooled(self, max_connections: int | None = None, block_ms: int = 0) -> Any:
        """A client whose pool never holds more than `pool_size` connections (per node on a Cluster).

        `max_connections` bounds it otherwise; `block_ms` lengthens the command timeout for
        a pool that also serves blocking reads of up to that long (the broker's).

        Connection errors surface within `redis_timeout_s` (one quick retry first), and
        waiting for a pooled connection is bounded by it too. A request as a whole is
        bounded by the same figure (app/api/bounds.py), so a Redis that hangs rather
        than refuses costs a request one timeout, not one per command and retry.
        """
        s = self.settings
        return self._client(
            max_connections or self.pool_size, block_ms / 1000 + s.redis_timeout_s, health_check_interval=30
        )

    @property
    def pool_size(self) -> int:
        """JOBTRAIL_REDIS_POOL_SIZE, or the topology's default when it is 0."""
        if self.settings.redis_pool_size:
            return self.settings.redis_pool_size
        return self.CLUSTER_POOL_SIZE if self.kind == "cluster" else self.POOL_SIZE

    def dedicated(self, block_ms: int) -> Any:
        """A single-connection client for a blocking read of up to `block_ms`.

        On a Cluster it is a RedisCluster with one connection per node, routing each
        (single-key) read to the node that serves its slot; `node(...)` gives a plain
        connection to one node instead, for a reader that owns a node's reads.
        """
        return self._client(1, block_ms / 1000 + self.settings.redis_timeout_s)

    def node(self, host: str, port: int, block_ms: int) -> Redis:
        """A single-connection client to one node of the Cluster, e.g. a primary that `cluster_primaries` named.

        Commands on it are not redirected: a key that moved answers MOVED, for the caller
        to look the node up again.
        """
        assert self.topology is not None and self.topology.kind == "cluster", "node() is for a Cluster"
        return Redis(host=host, port=port, max_connections=1,
                     **self._options(block_ms / 1000 + self.settings.redis_timeout_s))

    def _client(self, max_connections: int, socket_timeout: float, **extra: Any) -> Any:
        if self._fake_server is not None:
            return self._fake()
        assert self.topology is not None
        if self.topology.kind == "sentinel":
            return self._sentinel_master(max_connections, socket_timeout, **extra)
        if self.topology.kind == "cluster":
            return FailoverAwareCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.topology.hosts],
                max_connections=max_connections,
                **self._options(socket_timeout, **extra),
            )
        pool = WaitingPool.from_url(
            self.topology.url,
            max_connections=max_connections,
            timeout=self.settings.redis_timeout_s,
            **self._options(socket_timeout, with_credentials=False, **extra),
        )
        pack_with_hiredis(pool)
        # from_pool: closing the client closes the pool; Redis(connection_pool=...) would
        # leave its connections open after shutdown.
        return Redis.from_pool(pool)

    def _sentinel_master(self, max_connections: int, socket_timeout: float, **extra: Any) -> Redis:
        assert self.topology is not None
        s = self.settings
        sentinel_options: dict[str, Any] = {
            "socket_connect_timeout": s.redis_timeout_s,
            "socket_timeout": s.redis_timeout_s,
            "decode_responses": True,
            "client_name": self.client_name,
            # redis-py's default would retry each sentinel three times with backoffs of
            # seconds (an AuthenticationError is a ConnectionError too): 20 s before a
            # wrong sentinel password, or a dead sentinel, says so.
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        }
        if s.sentinel_password:
            sentinel_options["password"] = s.sentinel_password
        if self.topology.tls:
            sentinel_options["ssl"] = True
        sentinel = Sentinel(list(self.topology.hosts), sentinel_kwargs=sentinel_options)
        master: Redis = sentinel.master_for(
            self.topology.service,
            connection_pool_class=BlockingSentinelConnectionPool,
            max_connections=max_connections,
            timeout=s.redis_timeout_s,
            db=self.topology.db,
            ssl=self.topology.tls,
            **self._options(socket_timeout, **extra),
        )
        pack_with_hiredis(master.connection_pool)
        return master

    def _options(self, socket_timeout: float, *, with_credentials: bool = True, **extra: Any) -> dict[str, Any]:
        """What every connection gets: timeouts, one quick retry, the client name, decoded replies."""
        s = self.settings
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": s.redis_timeout_s,
            "socket_timeout": socket_timeout,
            "client_name": self.client_name,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            **extra,
        }
        assert self.topology is not None
        if with_credentials and self.topology.password is not None:
            options["password"] = self.topology.password
        if with_credentials and self.topology.username is not None:
            options["username"] = self.topology.username
        if self.topology.kind == "cluster" and self.topology.tls:
            options["ssl"] = True
        return options

    def _fake(self) -> Redis:
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=self._fake_server, decode_responses=True)

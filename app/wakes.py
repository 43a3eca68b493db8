"""The hub's wake-ups: one sharded pub/sub connection per Redis node, SSUBSCRIBEd to the watched streams' wake channels.

Every writer of a watched stream SPUBLISHes on the stream's wake channel (keys.wake) right
after its XADD, in the same script or pipeline, on the same node (the channel is in the
stream's slot). A wake is a hint (app/hub.py decides whether its payload can be delivered
or the stream must be read): the stream stays the truth, so a lost wake delays an event and
never loses one (the hub reads every stream again after a reconnect, and slowly all of them
anyway).

Each connection's socket is read in chunks and every message in a chunk parsed at once
(`_receive_raw`); a connection with no socket of its own (fakeredis) is read by redis-py.

One server or a Sentinel master: one connection. A Cluster: one per primary that serves a
watched stream, found by the channel's slot. Connections are plain redis-py connections
made from the hub's client (so they carry its TLS, credentials and client name, and a
Sentinel connection looks the master up when it connects); nothing reconnects behind our
back: a dead connection is reported (`on_lost`) with the channels it held, for the hub to
subscribe them again and read their streams.

Commands go out in order through one sender per connection, and replies are matched in that
order (`_Pending`), so a SUNSUBSCRIBE followed by an SSUBSCRIBE of the same channel ends
subscribed, and `subscribe` returns only once Redis confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from jobtrail.store import ClusterLayoutUnavailable

log = logging.getLogger(__name__)

# Channels per SSUBSCRIBE when many are (re)subscribed at once: keeps one command's size sane.
_CHUNK = 1000

# How much one read of a pub/sub socket takes: every wake that arrived meanwhile, parsed at once.
_READ_SIZE = 1 << 16

# (channel, payload): the payload as bytes from the socket reader, str from redis-py's.
OnWake = Callable[[str, Any], None]
OnLost = Callable[[set[str]], None]


class _Pending:
    """A command sent and not yet answered; `waiting` are the channels whose confirmation is due."""

    __slots__ = ("done", "name", "waiting")

    def __init__(self, name: str, channels: Iterable[str], done: asyncio.Future[None]) -> None:
        self.name = name
        self.waiting = set(channels)
        self.done = done


class NodeListener:
    """One pub/sub connection to one node; `channels` are those subscribed (or being subscribed) on it."""

    def __init__(self, name: str, connect: Callable[[], AbstractConnection], on_wake: OnWake, on_lost: OnLost,
                 *, keepalive_s: float, timeout_s: float) -> None:
        self.name = name
        self._make = connect
        self._on_wake = on_wake
        self._on_lost = on_lost
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.channels: set[str] = set()
        self._conn: AbstractConnection | None = None
        self._connecting = asyncio.Lock()
        # None: the sender's signal to stop (a cancellation alone can be lost inside redis-py's timeouts).
        self._outbox: asyncio.Queue[tuple[str, list[str], asyncio.Future[None]] | None] = asyncio.Queue()
        self._closing = False
        self._inflight: deque[_Pending] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._heard = 0.0  # when the socket reader last got anything

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def subscribe(self, channels: list[str]) -> None:
        """SSUBSCRIBE `channels`; returns once Redis confirmed every one (RedisError if not)."""
        await self._ensure_connected()
        self.channels.update(channels)
        done = asyncio.get_running_loop().create_future()
        self._outbox.put_nowait(("SSUBSCRIBE", channels, done))
        await asyncio.wait_for(asyncio.shield(done), self.timeout_s)

    def unsubscribe(self, channel: str) -> None:
        """SUNSUBSCRIBE `channel`, in order after what was sent before; nobody waits for it."""
        self.channels.discard(channel)
        if self._conn is not None:
            done = asyncio.get_running_loop().create_future()
            done.add_done_callback(lambda f: f.exception())  # a lost connection is reported elsewhere
            self._outbox.put_nowait(("SUNSUBSCRIBE", [channel], done))

    async def _ensure_connected(self) -> None:
        async with self._connecting:
            if self._conn is not None:
                return
            conn = self._make()
            try:
                await asyncio.wait_for(conn.connect(), self.timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                raise
            self._conn = conn
            self._tasks = [asyncio.create_task(self._send(conn), name=f"jobtrail-wakes-send-{self.name}"),
                           asyncio.create_task(self._receive(conn), name=f"jobtrail-wakes-recv-{self.name}")]

    async def _send(self, conn: AbstractConnection) -> None:
        try:
            while not self._closing:
                queued = await self._outbox.get()
                if queued is None:
                    return
                command, channels, done = queued
                self._inflight.append(_Pending(command, channels, done))
                await conn.send_command(command, *channels)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            await self._lose(conn, exc)

    async def _receive(self, conn: AbstractConnection) -> None:
        stream = getattr(conn, "_reader", None)
        if isinstance(stream, asyncio.StreamReader):
            await self._receive_raw(conn, stream)
            return
        # A connection without a socket of its own (fakeredis, embedded mode): redis-py reads.
        pinged = False
        try:
            while not self._closing:
                try:
                    reply = await conn.read_response(timeout=self.keepalive_s, disconnect_on_error=False,
                                                     push_request=True)
                except ResponseError as exc:
                    self._answered(exc)
                    continue
                if reply is None:
                    # Silent for a keep-alive interval: a PING tells a dead peer from a quiet one.
                    if pinged:
                        raise RedisConnectionError(f"no reply to PING within {self.keepalive_s}s")
                    pinged = True
                    self._outbox.put_nowait(("PING", [], asyncio.get_running_loop().create_future()))
                    continue
                pinged = False
                self._dispatch(reply)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            await self._lose(conn, exc)

    async def _receive_raw(self, conn: AbstractConnection, stream: asyncio.StreamReader) -> None:
        """Read the socket in chunks and parse every message in each at once.

        redis-py's read_response costs a timeout, a parser round and an event per message:
        at thousands of wakes a second that was most of the hub's CPU. The connection was
        made (TLS, AUTH, HELLO, CLIENT SETNAME) and answered its handshake, so nothing of
        ours is buffered in redis-py's parser; from here on only this reads it.
        """
        parser = hiredis.Reader(replyError=ResponseError)
        self._heard = time.monotonic()
        # One of the connection's tasks, so that whichever finds it dead (`_lose`) stops the others.
        self._tasks.append(asyncio.create_task(self._keepalive(conn), name=f"jobtrail-wakes-keepalive-{self.name}"))
        try:
            while not self._closing:
                data = await stream.read(_READ_SIZE)
                if not data:
                    raise RedisConnectionError("the server closed the pub/sub connection")
                self._heard = time.monotonic()
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"smessage":
                        self._on_wake(reply[1].decode(), reply[2])
                    elif isinstance(reply, ResponseError):
                        self._answered(reply)
                    else:
                        self._dispatch(_text(reply))
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, hiredis.ProtocolError) as exc:
            await self._lose(conn, exc)

    async def _keepalive(self, conn: AbstractConnection) -> None:
        """Silent for a keep-alive interval: a PING tells a dead peer from a quiet one."""
        try:
            while not self._closing:
                await asyncio.sleep(self._heard + self.keepalive_s - time.monotonic())
                if time.monotonic() - self._heard < self.keepalive_s:
                    continue
                pinged = time.monotonic()
                self._outbox.put_nowait(("PING", [], asyncio.get_running_loop().create_future()))
                await asyncio.sleep(self.keepalive_s)
                if self._heard < pinged:
                    raise RedisConnectionError(f"no reply to PING within {self.keepalive_s}s")
        except asyncio.CancelledError:
            raise
        except RedisError as exc:
            await self._lose(conn, exc)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            self._answered(None)  # PONG, the one plain reply in subscribed mode
            return
        kind, channel = reply[0], str(reply[1]) if len(reply) > 1 else ""
        if kind == "smessage":
            self._on_wake(channel, reply[2] if len(reply) > 2 else "")
        elif kind in ("ssubscribe", "sunsubscribe"):
            head = self._inflight[0] if self._inflight else None
            if head is not None and head.name.lower() == kind and channel in head.waiting:
                head.waiting.discard(channel)
                if not head.waiting:
                    self._answered(None)
            elif kind == "sunsubscribe" and channel in self.channels:
                # Unasked: the slot moved to another node (resharding, failover).
                self.channels.discard(channel)
                self._on_lost({channel})
        elif kind == "pong":
            self._answered(None)

    def _answered(self, error: Exception | None) -> None:
        if not self._inflight:
            return
        pending = self._inflight.popleft()
        if not pending.done.done():
            if error is None:
                pending.done.set_result(None)
            else:
                pending.done.set_exception(error)

    async def _lose(self, conn: AbstractConnection, exc: BaseException) -> None:
        dead = conn
        if self._conn is None or self._conn is not conn:
            return
        log.warning("hub pub/sub connection to %s lost (%s); %d channels to subscribe again",
                    self.name, exc, len(self.channels))
        self._conn = None
        lost, self.channels = self.channels, set()
        error = RedisConnectionError(f"pub/sub connection lost: {exc}")
        while self._inflight:
            pending = self._inflight.popleft()
            if not pending.done.done():
                pending.done.set_exception(error)
        while not self._outbox.empty():
            queued = self._outbox.get_nowait()
            if queued is not None and not queued[2].done():
                queued[2].set_exception(error)
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await dead.disconnect()
        if lost:
            self._on_lost(lost)

    async def aclose(self) -> None:
        self._closing = True
        self._outbox.put_nowait(None)
        closing, self._conn = self._conn, None
        if closing is not None:
            conn: AbstractConnection = closing
            with contextlib.suppress(Exception):
                await conn.disconnect()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: Python 3.11 can lose a cancellation that meets a timeout's own.
            await asyncio.wait(tasks, timeout=self.timeout_s)


def _text(reply: Any) -> Any:
    """A reply as redis-py would decode it, for `_dispatch`: bytes as str, lists element by element."""
    if isinstance(reply, bytes):
        return reply.decode(errors="replace")
    if isinstance(reply, list):
        return [_text(item) for item in reply]
    return reply


class Wakes:
    """Routes each wake channel to the listener of the node that serves its slot."""

    def __init__(self, client: Any, on_wake: OnWake, on_lost: OnLost, *, keepalive_s: float,
                 timeout_s: float) -> None:
        # `client`: the hub's own Redis (or RedisCluster); its connections are the template.
        self.client = client
        self._on_wake = on_wake
        self._on_lost = on_lost
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.listeners: dict[str, NodeListener] = {}
        self._home: dict[str, NodeListener] = {}

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    @property
    def connections(self) -> int:
        return sum(1 for listener in self.listeners.values() if listener.connected)

    async def subscribe(self, channels: list[str]) -> None:
        """Subscribe `channels` on their nodes; returns once every one is confirmed.

        On a Cluster a failure may be a stale slot map (a primary died, or came back as a
        replica and answers MOVED): the map is loaded again and the channels sent once more
        to the nodes it names now. Nothing else reloads it, since the hub's own client
        sends no command that would fail on the old node.
        """
        try:
            await self._subscribe_once(channels)
        except (RedisError, OSError, TimeoutError):
            if not self.cluster:
                raise
            await self.refresh()
            await self._subscribe_once(channels)

    async def _subscribe_once(self, channels: list[str]) -> None:
        groups = await self._group(channels)
        await asyncio.gather(*(listener.subscribe(chunk) for listener, chunk in groups))

    def unsubscribe(self, channel: str) -> None:
        listener = self._home.pop(channel, None)
        if listener is not None:
            listener.unsubscribe(channel)

    async def refresh(self) -> None:
        """Look the Cluster's slots up again (after a connection to a node was lost).

        Until a dead primary's replica has taken over, that fails with redis-py's bare
        RedisClusterException; raised as the ConnectionError it means (app/store.py), the
        hub ends the streams it could not subscribe again, and their clients resume.
        """
        if self.cluster:
            try:
                await self.client.nodes_manager.initialize()
            except RedisClusterException as exc:
                raise ClusterLayoutUnavailable(f"the cluster's slot map could not be loaded: {exc}") from exc

    async def _group(self, channels: list[str]) -> list[tuple[NodeListener, list[str]]]:
        by_command: dict[tuple[str, int], list[str]] = {}
        listeners: dict[str, NodeListener] = {}
        for channel in channels:
            listener, slot = await self._listener_for(channel)
            listeners[listener.name] = listener
            self._home[channel] = listener
            by_command.setdefault((listener.name, slot), []).append(channel)
        groups = []
        for (name, _), members in by_command.items():
            for start in range(0, len(members), _CHUNK):
                groups.append((listeners[name], members[start : start + _CHUNK]))
        return groups

    async def _listener_for(self, channel: str) -> tuple[NodeListener, int]:
        """The listener of `channel`'s node, and the group it may share an SSUBSCRIBE with (its slot on a Cluster)."""
        if not self.cluster:
            return self._listener("redis", self._single_connection), 0
        cluster: RedisCluster = self.client
        await cluster.initialize()
        slot = cluster.keyslot(channel)
        node = cluster.nodes_manager.get_node_from_slot(slot)

        def connect() -> AbstractConnection:
            return node.connection_class(**node.connection_kwargs)

        return self._listener(node.name, connect), slot

    def _single_connection(self) -> AbstractConnection:
        client: Redis = self.client
        return client.connection_pool.make_connection()

    def _listener(self, name: str, connect: Callable[[], AbstractConnection]) -> NodeListener:
        listener = self.listeners.get(name)
        if listener is None:
            listener = NodeListener(name, connect, self._on_wake, self._lost_on, keepalive_s=self.keepalive_s,
                                    timeout_s=self.timeout_s)
            self.listeners[name] = listener
        return listener

    def _lost_on(self, channels: set[str]) -> None:
        for channel in channels:
            self._home.pop(channel, None)
        self._on_lost(channels)

    async def aclose(self) -> None:
        listeners = list(self.listeners.values())
        self.listeners.clear()
        self._home.clear()
        await asyncio.gather(*(listener.aclose() for listener in listeners))

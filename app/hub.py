"""The live-tail hub: sharded pub/sub wake-ups, single-key reads, fanned out to subscribers.

Each SSE client and each /ws subscription subscribes to one stream: a job's, or an activity
feed. The hub SSUBSCRIBEs to the stream's wake channel (app/wakes.py) when the stream gets
its first subscriber and SUNSUBSCRIBEs when it loses its last. A job's wake carries the new
entry and the id of the entry before it in the stream (app/append.lua; a batch of reports,
app/append_many.lua, carries its entries and the entry before its first): when that is the
hub's cursor, the entries are the very next ones, and the hub decodes them (through the
stream's decoder, as a read would) and offers them with no read at all. Any other wake (a
gap: an entry that published nothing, or wakes lost; a feed's empty one; the bare id of a
batch too big to carry, or of an older script) marks the stream dirty, and each tick
reads every dirty stream after its cursor with one XRANGE each, all in one pipeline (one
per node on a Cluster). Each entry is decoded once and the same item offered to every
subscriber. So the cost of an event does not grow
with the number of watched streams; no command spans two slots.

The stream stays the truth. A wake is delivered only when it names the hub's cursor as its
predecessor, which the script took from the stream (or from the hash's last event when the
stream's length shows the two in step, app/append.lua); a lost wake delays an event,
never loses it: the next wake's predecessor is not the cursor, so the stream is read; after a pub/sub
connection is lost (restart, failover, CLIENT KILL) every stream it carried is subscribed
again and read once; and a slow sweep reads every watched stream once per `catch_up_s`
(a fixed cost per watched stream, not per event) for writes that publish nothing.

Redis connections: the pooled client's, plus one pub/sub connection per node. A subscriber
whose bounded queue overflows is dropped: its client resumes from its last id (SSE's
Last-Event-ID, /ws's `after`) and loses nothing.

Exactness (app/follow.py relies on it): `subscribe` returns only once Redis confirmed the
SSUBSCRIBE. From then on every append to the stream publishes a wake that reaches this hub,
so every entry after the hub's cursor is read and offered; entries appended before the
confirmation are in the stream when the caller's replay (which starts after `subscribe`
returns) reads it. The hub also reads a newly watched stream once, at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from redis.exceptions import RedisClusterException, RedisError

from jobtrail.eventlog import decode_events
from jobtrail.keys import Keys
from jobtrail.offsets import is_after
from jobtrail.wakes import Wakes

log = logging.getLogger(__name__)

# Turns a stream's raw entries into the items subscribers get (each with an `.id`).
Decoder = Callable[[Iterable[tuple[str, dict[str, str]]]], list[Any]]

# Why the hub ends a subscription (SubscriptionClosed.reason); app/follow.py names each for its transports.
SHUTTING_DOWN = "server is shutting down"
FELL_BEHIND = "subscriber fell too far behind"
REDIS_LOST = "event store unavailable"
UNREADABLE = "unreadable event in the stream"

# What a Redis that is away (or a Cluster between two slot maps) raises; RedisClusterException is no RedisError.
_UNREACHABLE = (RedisError, RedisClusterException, OSError, TimeoutError)

# Entries one XRANGE takes; a stream with more is read again next tick.
READ_COUNT = 500
# Streams read in one tick (one pipeline); more wait for the next tick.
BATCH = 2000
# How long a tick lets wakes gather before it reads: a pipeline's own cost (a connection, a
# send, a reply) is then shared by every stream woken meanwhile, at 2 ms of latency.
GATHER_S = 0.002
# What append.lua published before its wake was concatenated: [new id, the entry before it, its fields].
_decode_wake = msgspec.json.Decoder(tuple[str, str, list[str]]).decode
# What it publishes now starts with `~` (bytes from app/wakes.py's reader, str from redis-py's).
_CONCATENATED = frozenset([ord("~"), "~"])


class _BatchWake(msgspec.Struct, frozen=True):
    """append_many.lua's wake of a small batch: `p` the entry before its first, `e` each entry's (id, fields)."""

    p: str
    e: list[tuple[str, list[str]]]


_decode_batch_wake = msgspec.json.Decoder(_BatchWake).decode
# A payload that starts with a digit is an id alone (bytes from app/wakes.py's reader, str from redis-py's).
_ID_START = frozenset([*b"0123456789", *"0123456789"])
# A batch's carried wake is a JSON object (append_many.lua); append.lua's older one a JSON array.
_OBJECT_START = frozenset([*b"{", "{"])
# What a wake's payload may fail with: not JSON, or not the shapes above.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, ValueError)
# How often the catch-up sweep takes its next slice.
_SWEEP_TICK_S = 1.0


def parse_wake(payload: bytes | str) -> tuple[str, str, list[str]]:
    """append.lua's wake: `~<id> <previous id> <bytes of d> <e>\\n<d><k>` as (id, previous, flat fields).

    ValueError (or UnicodeDecodeError) when it is not that shape. The JSON wake of the
    script before (a worker not yet upgraded) is still read (`_decode_wake`).
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    head, newline, body = raw.partition(b"\n")
    entry_id, previous, size, meta = head[1:].split(b" ", 3)
    cut = int(size)
    if not newline or cut > len(body):
        raise ValueError("a truncated wake")
    return entry_id.decode(), previous.decode(), ["e", meta.decode(), "d", body[:cut].decode(), "k",
                                                  body[cut:].decode()]


class SubscriptionClosed(Exception):
    """The hub ended this subscription: it overflowed, Redis failed, or the hub stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """A bounded queue of one stream's new entries, filled by the hub, read by one follow.

    Its items are what the stream's decoder makes: job events by default, the activity
    feed's transitions for the feed; so they are typed as the decoder's, `Any`.

    Built for one job with 1,000 followers: `offer` is a deque append, and it wakes the
    reader only when it waits and only once however many entries come before it runs, so
    a follow that was busy takes everything queued in one `get_all` (one write to its
    client, not one per event). And no timer per wait: the idle timeout is one timer that
    is moved forward lazily, so a busy follow pays for one per idle timeout, not per event.
    """

    __slots__ = ("_deadline", "_items", "_peers", "_timer", "_waiter", "closed", "maxsize", "start", "stream")

    def __init__(self, stream: str, maxsize: int) -> None:
        self.stream = stream
        self.maxsize = maxsize
        # The hub's cursor when this joined its stream: every entry after it is offered here,
        # so a follow's replay need read no further (Hub.subscribe). "+" (XRANGE's end) until
        # then, and for a subscription that never joined (a draining hub's): read it all.
        self.start = "+"
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.closed: SubscriptionClosed | None = None
        self._peers: set[Subscription] = set()  # its stream's subscribers, itself among them

    @property
    def shared(self) -> bool:
        """Whether another subscription gets the same items now: only then is a frame worth caching (app/frames.py)."""
        return len(self._peers) > 1

    def offer(self, event: Any) -> bool:
        """Queue an event; False (and the subscription closed) when the queue is full or already closed."""
        if self.closed is not None:
            return False
        if len(self._items) >= self.maxsize:
            self.close(FELL_BEHIND)
            return False
        self._items.append(event)
        self._wake()
        return True

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = SubscriptionClosed(reason)
            # Drop everything queued, so the reader stops at the last event it really
            # sent; dropping only the oldest would leave a hole that resuming by
            # Last-Event-ID cannot see.
            self._items.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._wake()

    async def get(self, timeout: float) -> Any:
        """The next entry, None after `timeout` seconds idle; SubscriptionClosed when closed."""
        if not self._items:
            await self._wait(timeout)
        if self.closed is not None:
            raise self.closed
        return self._items.popleft() if self._items else None

    async def get_all(self, timeout: float) -> list[Any]:
        """Every entry queued (waiting for one), [] after `timeout` seconds idle; SubscriptionClosed when closed."""
        if not self._items:
            await self._wait(timeout)
        if self.closed is not None:
            raise self.closed
        items = list(self._items)
        self._items.clear()
        return items

    def take(self) -> list[Any]:
        """Every entry queued now, without waiting ([] when none, or closed: the next `get_all` says so)."""
        items = list(self._items)
        self._items.clear()
        return items

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        """Until an entry comes, the subscription closes, or `timeout` seconds pass."""
        if self.closed is not None:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        self._deadline = deadline = loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
        try:
            # A bare future, not asyncio.wait_for: on Python 3.11 that swallows a
            # cancellation that meets an entry arriving in the same turn of the loop
            # (cpython gh-86296), so a follow told to stop (a /ws token's expiry, an
            # unsubscribe) went on to its job's end. A cancelled task whose waiter already
            # has its result is still cancelled at its next step, and keeps the entries.
            await waiter
        finally:
            self._waiter = None

    def _expire(self) -> None:
        """The idle timer: time out a wait that has reached its deadline, or move on to the current wait's."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # the reader is busy: its next wait arms the timer again
        loop = waiter.get_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
        else:
            waiter.set_result(None)


class _Watched:
    """One stream with subscribers: where the hub has read it up to, and who gets what comes next."""

    __slots__ = ("channel", "cursor", "decode", "ready", "stream", "subscribers")

    def __init__(self, stream: str, channel: str, cursor: str, decode: Decoder) -> None:
        self.stream = stream
        self.channel = channel
        self.cursor = cursor
        self.decode = decode
        self.subscribers: set[Subscription] = set()
        self.ready: asyncio.Future[None] | None = None  # the SSUBSCRIBE's confirmation


class Hub:
    """Fans the tails of many job streams out to their subscribers."""

    def __init__(self, reader: Any, writer: Any, keys: Keys, *, block_ms: int, queue_size: int,
                 catch_up_s: float, timeout_s: float = 5.0) -> None:
        # `reader`: the client the pub/sub connections are made from (never pooled);
        # `writer`: the process's shared pool, for the XRANGE pipelines.
        self.reader = reader
        self.writer = writer
        self.keys = keys
        self.queue_size = queue_size
        self.catch_up_s = catch_up_s
        self.wakes = Wakes(reader, self._woken, self._lost, keepalive_s=block_ms / 1000, timeout_s=timeout_s)
        self._streams: dict[str, _Watched] = {}
        self._by_channel: dict[str, _Watched] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._wakeup = asyncio.Event()
        self._sweep: list[str] = []
        self._next_sweep = 0.0
        self._task: asyncio.Task[None] | None = None
        self._recoveries: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._draining: str | None = None
        self.reads = 0  # XRANGEs issued, for tests and the bench
        self.wake_deliveries = 0  # entries delivered from their wake without a read

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobtrail-hub")

    async def stop(self) -> None:
        # The flag too, not only cancel(): redis-py can lose a cancellation that lands
        # while it reconnects, and the loop would then read on forever.
        self._stopping = True
        tasks = [t for t in (self._task, *self._recoveries) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self._task = None
        for watched in self._streams.values():
            for sub in watched.subscribers:
                sub.close(SHUTTING_DOWN)
        self._streams.clear()
        self._by_channel.clear()
        self._dirty.clear()
        await self.wakes.aclose()
        await self.reader.aclose()

    def drain(self, reason: str = SHUTTING_DOWN) -> None:
        """End every subscription now, and any made from now on, so SSE responses finish cleanly.

        Called when the process is told to stop: its streams end with `reason` and
        their clients reconnect (to another process) and resume from their last id.
        """
        self._draining = reason
        for watched in self._streams.values():
            for sub in watched.subscribers:
                sub.close(reason)

    async def subscribe(self, stream: str, after: str, decode: Decoder = decode_events) -> Subscription:
        """Deliver every entry of `stream` that the hub reads after `after`, once Redis confirmed the wake channel.

        Entries at or before `after`, or read before this call, are the caller's to
        fetch with XRANGE, up to the subscription's `start` (the hub's cursor when it
        joined: everything after it is offered); the caller drops anything it already has
        by id. `decode`
        turns entries into items (job events by default); one stream has one decoder.
        RedisError when the wake channel cannot be subscribed.
        """
        sub = Subscription(stream, self.queue_size)
        if self._draining:
            # Still worth returning: the caller replays what it can, then ends.
            sub.close(self._draining)
            return sub
        watched = self._streams.get(stream)
        if watched is None:
            watched = _Watched(stream, self.keys.wake(stream), after, decode)
            self._streams[stream] = watched
            self._by_channel[watched.channel] = watched
            watched.ready = asyncio.ensure_future(self.wakes.subscribe([watched.channel]))
            watched.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        # From here on every entry the hub takes after its cursor is offered to `sub` too.
        sub.start = watched.cursor
        watched.subscribers.add(sub)
        sub._peers = watched.subscribers
        assert watched.ready is not None
        try:
            await asyncio.shield(watched.ready)
        except _UNREACHABLE as exc:
            self.unsubscribe(sub)
            if self._streams.get(stream) is watched:
                self._forget(watched, REDIS_LOST)
            raise RedisError(f"cannot subscribe to {stream}'s wake-ups: {exc}") from exc
        except BaseException:
            self.unsubscribe(sub)
            raise
        self._mark(stream)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        watched = self._streams.get(sub.stream)
        if watched is None:
            return
        watched.subscribers.discard(sub)
        if not watched.subscribers:
            self._drop(watched)

    def _drop(self, watched: _Watched) -> None:
        del self._streams[watched.stream]
        self._by_channel.pop(watched.channel, None)
        self._dirty.pop(watched.stream, None)
        self.wakes.unsubscribe(watched.channel)

    def _forget(self, watched: _Watched, reason: str) -> None:
        for sub in list(watched.subscribers):
            sub.close(reason)
        watched.subscribers.clear()
        if self._streams.get(watched.stream) is watched:
            self._drop(watched)

    @property
    def subscriber_count(self) -> int:
        return sum(len(w.subscribers) for w in self._streams.values())

    @property
    def watched_count(self) -> int:
        return len(self._streams)

    @property
    def dirty_count(self) -> int:
        """Streams waiting for a read (woken, newly watched, or in the sweep's slice)."""
        return len(self._dirty)

    # --- wake-ups ---

    def _mark(self, stream: str) -> None:
        self._dirty[stream] = None
        self._wakeup.set()

    def _woken(self, channel: str, payload: bytes | str) -> None:
        watched = self._by_channel.get(channel)
        if watched is None:
            return
        if not payload:  # the feeds' wakes say nothing: read
            self._mark(watched.stream)
            return
        first = payload[0]
        if first in _ID_START:
            # An id alone (a batch too big to carry, append_many.lua; an older append script): read if new.
            last_id = payload.decode() if isinstance(payload, bytes) else payload
            if is_after(last_id, watched.cursor):
                self._mark(watched.stream)
            return
        try:
            if first in _OBJECT_START:
                batch = _decode_batch_wake(payload)
                previous, carried = batch.p, batch.e
            else:
                entry_id, previous, flat = parse_wake(payload) if first in _CONCATENATED else _decode_wake(payload)
                carried = [(entry_id, flat)]
        except _UNDECODABLE:
            self._mark(watched.stream)
            return
        if not carried:
            self._mark(watched.stream)
            return
        if previous != watched.cursor:
            # Something between the cursor and these entries (or they were already read):
            # the stream says what; a read from the cursor also takes them.
            if is_after(carried[-1][0], watched.cursor):
                self._mark(watched.stream)
            return
        # The entries right after the cursor, as the stream holds them: no read needed.
        entries = []
        for entry_id, flat in carried:
            pairs = iter(flat)
            entries.append((entry_id, dict(zip(pairs, pairs, strict=False))))
        try:
            items = watched.decode(entries)
        except Exception:
            self._mark(watched.stream)  # the read's path handles an unreadable entry
            return
        self.wake_deliveries += len(items)
        self._offer(watched, items)

    def _lost(self, channels: set[str]) -> None:
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self._recover(channels), name="jobtrail-hub-recover")
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _recover(self, channels: set[str]) -> None:
        """Subscribe a lost connection's channels again, then read their streams once (for the wakes lost)."""
        watched = [self._by_channel[c] for c in channels if c in self._by_channel]
        if not watched:
            return
        try:
            await self.wakes.refresh()
            await self.wakes.subscribe([w.channel for w in watched])
        except _UNREACHABLE as exc:
            log.warning("hub cannot subscribe again (%s); closing %d streams' subscriptions", exc, len(watched))
            for w in watched:
                self._forget(w, REDIS_LOST)
            return
        for w in watched:
            if self._streams.get(w.stream) is w:
                self._mark(w.stream)

    # --- reads ---

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), _SWEEP_TICK_S)
                self._wakeup.clear()
                self._sweep_slice()
                if self._dirty:
                    await asyncio.sleep(GATHER_S)
                    await self._read_dirty()
                if self._dirty:
                    self._wakeup.set()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hub read failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _sweep_slice(self) -> None:
        """Mark the next slice of watched streams, so that each is read once per `catch_up_s`."""
        now = time.monotonic()
        if now < self._next_sweep or not self._streams:
            return
        self._next_sweep = now + _SWEEP_TICK_S
        if not self._sweep:
            self._sweep = list(self._streams)
        per_tick = math.ceil(len(self._streams) * _SWEEP_TICK_S / self.catch_up_s)
        for _ in range(min(per_tick, len(self._sweep))):
            stream = self._sweep.pop()
            if stream in self._streams:
                self._dirty[stream] = None

    async def _read_dirty(self) -> None:
        batch: list[tuple[_Watched, str]] = []
        for stream in list(self._dirty)[:BATCH]:
            del self._dirty[stream]
            watched = self._streams.get(stream)
            if watched is not None:
                batch.append((watched, watched.cursor))
        if not batch:
            return
        try:
            async with self.writer.pipeline(transaction=False) as pipe:
                for watched, cursor in batch:
                    pipe.xrange(watched.stream, min=f"({cursor}", max="+", count=READ_COUNT)
                replies = await pipe.execute(raise_on_error=False)
        except _UNREACHABLE as exc:
            # Subscribers end their streams with a retry hint; clients resume by id.
            log.warning("hub lost Redis (%s); closing %d streams' subscriptions", exc, len(batch))
            for watched, _ in batch:
                self._forget(watched, REDIS_LOST)
            return
        self.reads += len(batch)
        for (watched, _), entries in zip(batch, replies, strict=True):
            if self._streams.get(watched.stream) is not watched:
                continue  # unsubscribed while we were reading
            if isinstance(entries, Exception):
                log.warning("hub cannot read %s: %s", watched.stream, entries)
                self._forget(watched, REDIS_LOST)
                continue
            self._deliver(watched, entries)

    def _deliver(self, watched: _Watched, entries: list[tuple[str, dict[str, str]]]) -> None:
        if not entries:
            return
        if len(entries) >= READ_COUNT:
            self._mark(watched.stream)
        # The cursor now, not the one the read started from: a wake may have delivered
        # entries meanwhile, and they must not come twice.
        cursor = watched.cursor
        try:
            items = watched.decode(entry for entry in entries if is_after(entry[0], cursor))
        except Exception:
            # A corrupt entry must not stall every other stream: skip past it and
            # end this stream's subscriptions (`jobtrail repair --check` finds it).
            log.exception("hub cannot decode an entry of %s; closing its subscriptions", watched.stream)
            watched.cursor = entries[-1][0]
            self._forget(watched, UNREADABLE)
            return
        self._offer(watched, items)

    def _offer(self, watched: _Watched, items: list[Any]) -> None:
        if not items:
            return
        watched.cursor = items[-1].id
        for sub in list(watched.subscribers):
            for item in items:
                if not sub.offer(item):
                    self.unsubscribe(sub)
                    break

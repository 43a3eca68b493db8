"""The live-tail hub: one blocking XREAD per API process, fanned out to subscribers.

Each SSE client and each /ws subscription subscribes to one stream: a job's, or the
activity feed. The hub reads all subscribed streams with a single XREAD on its own
connection, so Redis connections grow with API processes, not with clients. A subscriber
whose bounded queue overflows is dropped: its client resumes from its last id (SSE's
Last-Event-ID, /ws's `after`) and loses nothing.

Subscribing writes to this hub's wake stream, which the blocking XREAD also watches, so
a new stream is read at once and no event can slip between "subscribed" and "read".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobtrail.eventlog import decode_events
from jobtrail.keys import Keys
from jobtrail.offsets import is_after

log = logging.getLogger(__name__)

# Turns a stream's raw entries into the items subscribers get (each with an `.id`).
Decoder = Callable[[Iterable[tuple[str, dict[str, str]]]], list[Any]]


# Why the hub ends a subscription (SubscriptionClosed.reason); app/follow.py names each for its transports.
SHUTTING_DOWN = "server is shutting down"
FELL_BEHIND = "subscriber fell too far behind"
REDIS_LOST = "event store unavailable"
UNREADABLE = "unreadable event in the stream"


class SubscriptionClosed(Exception):
    """The hub ended this subscription: it overflowed, Redis failed, or the hub stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """A bounded queue of one stream's new entries, filled by the hub.

    Its items are what the stream's decoder makes: job events by default, the activity
    feed's transitions for the feed; so they are typed as the decoder's, `Any`.
    """

    def __init__(self, stream: str, maxsize: int) -> None:
        self.stream = stream
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.closed: SubscriptionClosed | None = None

    def offer(self, event: Any) -> bool:
        """Queue an event; False (and the subscription closed) when the queue is full."""
        try:
            self._queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.close(FELL_BEHIND)
            return False

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = SubscriptionClosed(reason)
            # Drop everything queued, so the marker always fits and the reader stops at
            # the last event it really sent; dropping only the oldest would leave a hole
            # that resuming by Last-Event-ID cannot see.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(self.closed)

    async def get(self, timeout: float) -> Any:
        """The next entry, None after `timeout` seconds idle; SubscriptionClosed when closed."""
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that meets an
            # entry arriving in the same turn of the loop (cpython gh-86296), so a follow
            # told to stop (a /ws token's expiry, an unsubscribe) went on to its job's end.
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, SubscriptionClosed):
            raise item
        return item


class Hub:
    """Fans the tails of many job streams out to their subscribers."""

    def __init__(self, reader: Redis, writer: Redis, keys: Keys, *, block_ms: int, queue_size: int) -> None:
        # `reader` is the hub's own single connection, kept blocked in XREAD;
        # `writer` is the process's shared pool, used to wake the reader.
        self.reader = reader
        self.writer = writer
        self.block_ms = block_ms
        self.queue_size = queue_size
        self.wake_key = keys.hub_wake(uuid.uuid4().hex)
        self._wake_cursor = "0-0"
        self._cursors: dict[str, str] = {}
        self._decoders: dict[str, Decoder] = {}
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._redis_ok = True
        self._stopping = False
        self._draining: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobtrail-hub")

    async def stop(self) -> None:
        # The flag too, not only cancel(): redis-py can lose a cancellation that lands
        # while it reconnects, and the loop would then read on forever.
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close(SHUTTING_DOWN)
        self._subscribers.clear()
        self._cursors.clear()
        self._decoders.clear()
        with contextlib.suppress(RedisError):
            await self.writer.delete(self.wake_key)
        await self.reader.aclose()

    def drain(self, reason: str = SHUTTING_DOWN) -> None:
        """End every subscription now, and any made from now on, so SSE responses finish cleanly.

        Called when the process is told to stop: its streams end with `reason` and
        their clients reconnect (to another process) and resume from their last id.
        """
        self._draining = reason
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close(reason)

    async def subscribe(self, stream: str, after: str, decode: Decoder = decode_events) -> Subscription:
        """Deliver every entry of `stream` that the hub reads after `after` (one round trip to wake it).

        Entries at or before `after`, or read before this call, are the caller's to
        fetch with XRANGE; the caller drops anything it already has by id. `decode`
        turns entries into items (job events by default); one stream has one decoder.
        """
        sub = Subscription(stream, self.queue_size)
        if self._draining:
            # Still worth returning: the caller replays what it can, then ends.
            sub.close(self._draining)
            return sub
        known = stream in self._cursors
        self._subscribers[stream].add(sub)
        if not known:
            self._cursors[stream] = after
            self._decoders[stream] = decode
            try:
                async with self.writer.pipeline(transaction=False) as pipe:
                    pipe.xadd(self.wake_key, {"s": stream}, maxlen=16, approximate=True)
                    pipe.expire(self.wake_key, 3600)
                    await pipe.execute()
            except BaseException:
                self.unsubscribe(sub)
                raise
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.stream)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.stream]
            self._cursors.pop(sub.stream, None)
            self._decoders.pop(sub.stream, None)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                await self._read_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                # Subscribers end their streams with a retry hint; clients resume by id.
                log.warning("hub lost Redis (%s); closing %d subscriptions", exc, self.subscriber_count)
                for subs in list(self._subscribers.values()):
                    for sub in list(subs):
                        sub.close(REDIS_LOST)
                        self.unsubscribe(sub)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("hub read failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _read_once(self) -> None:
        streams = {self.wake_key: self._wake_cursor, **self._cursors}
        reply = await self.reader.xread(streams, block=self.block_ms, count=500)
        for stream, entries in reply or ():
            if not entries:
                continue
            if stream == self.wake_key:
                self._wake_cursor = entries[-1][0]
                continue
            cursor = self._cursors.get(stream)
            if cursor is None:  # unsubscribed while we were reading
                continue
            decode = self._decoders.get(stream, decode_events)
            try:
                events = decode(entry for entry in entries if is_after(entry[0], cursor))
            except Exception:
                # A corrupt entry must not stall every other stream: skip past it and
                # end this stream's subscriptions (`jobtrail repair --check` finds it).
                log.exception("hub cannot decode an entry of %s; closing its subscriptions", stream)
                self._cursors[stream] = entries[-1][0]
                for sub in list(self._subscribers.get(stream, ())):
                    sub.close(UNREADABLE)
                    self.unsubscribe(sub)
                continue
            if not events:
                continue
            self._cursors[stream] = events[-1].id
            for sub in list(self._subscribers.get(stream, ())):
                for event in events:
                    if not sub.offer(event):
                        self.unsubscribe(sub)
                        break

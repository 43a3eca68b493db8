"""One /ws connection: its subscriptions, each a task following a job (or the feed), and one bounded send queue.

Each subscription runs app/follow.py and puts its frames on the socket's one outbox
without ever waiting: when the outbox is full, that subscription ends `too slow` (its
end frame still queued behind what it already sent), so a client that does not read
holds up nobody, not the hub, not the other sockets. It resumes exactly by subscribing
again with `after` set to the last id it got. One writer task sends the outbox's frames
in order (`_write`, the one place a frame reaches the socket).

A bad client frame is answered with an error frame and the socket stays open, unless
bad frames keep coming (`ws_max_errors` in a minute: close 1008). A token's socket ends
at the token's expiry (an end frame, then close 4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import msgspec
from litestar import WebSocket
from redis.exceptions import RedisError

from jobtrail.activity import Transition
from jobtrail.api.common import checked_job_id
from jobtrail.api.ws_messages import (
    FEED,
    BadMessage,
    ClientMessage,
    EndFrame,
    ErrorFrame,
    FeedEntryFrame,
    FeedGapFrame,
    JobEventFrame,
    JobGap,
    Ping,
    Pong,
    SkippedFrame,
    Subscribe,
    Subscribed,
    about,
    decode_client,
    encode,
    subscribe_offset,
    target_of,
)
from jobtrail.auth import Principal
from jobtrail.config import Settings
from jobtrail.errors import JobNotFound
from jobtrail.eventlog import EventLog
from jobtrail.events import Event
from jobtrail.follow import (
    Batch,
    End,
    EndReason,
    FeedGap,
    Gap,
    Idle,
    JobItem,
    Skipped,
    feed_filter,
    follow_feed,
    follow_job,
)
from jobtrail.frames import FRAMES
from jobtrail.hub import Hub
from jobtrail.offsets import BEGINNING, is_after

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
NOT_AUTHENTICATED = 4401  # bad credentials at the handshake, or the token expired: the client fetches a new one
ERROR_WINDOW_S = 60.0
_FLUSH_S = 2.0


class Outbox:
    """The socket's frames waiting to be sent, oldest first, at most `size` of them from subscriptions.

    `offer` refuses a frame when full (the caller ends its subscription). `force` always
    queues: end and error frames, which must reach the client behind what came before;
    they are bounded by the subscription limit and the error limit, and past twice the
    size the socket is `overrun` (a client that does not read at all is closed).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.overrun = asyncio.Event()

    def offer(self, frame: bytes) -> bool:
        if len(self._frames) >= self.size:
            return False
        self._push(frame)
        return True

    def force(self, frame: bytes) -> None:
        self._push(frame)
        if len(self._frames) > 2 * self.size:
            self.overrun.set()

    def _push(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._ready.set()

    def pop(self) -> bytes | None:
        return self._frames.popleft() if self._frames else None

    async def next(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()


class Session:
    """Serves one accepted, authenticated socket until the client leaves or the socket must close."""

    def __init__(
        self,
        socket: WebSocket,
        principal: Principal,
        expires_at: int | None,
        events: EventLog,
        hub: Hub,
        settings: Settings,
    ) -> None:
        self.socket = socket
        self.principal = principal
        self.expires_at = expires_at
        self.events = events
        self.hub = hub
        self.settings = settings
        self.outbox = Outbox(settings.ws_queue_size)
        self.subscriptions: dict[str, asyncio.Task[None]] = {}  # target (job id or FEED) -> its task
        self._errors: deque[float] = deque()
        self._close = asyncio.Event()
        self._close_as: tuple[int, str] = (POLICY_VIOLATION, "")

    async def run(self) -> None:
        """Read and write until the client leaves (nothing more to send) or the socket must close."""
        writer = asyncio.create_task(self._write_all())
        reader = asyncio.create_task(self._read_all())
        closing = asyncio.create_task(self._close.wait())
        overrun = asyncio.create_task(self.outbox.overrun.wait())
        waits = {writer, reader, closing, overrun}
        timeout = None if self.expires_at is None else max(0.0, self.expires_at - time.time())
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            await self._end_subscriptions()
            if reader in done or writer in done:
                return  # the client left (or its connection broke): nobody to tell
            if not done:
                self.outbox.force(encode(EndFrame(reason="token expired")))
                self._close_as = (NOT_AUTHENTICATED, "token expired; connect again with a new one")
            elif overrun in done:
                self._close_as = (POLICY_VIOLATION, "too slow: the client does not read its frames")
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self._flush_and_close()
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _flush_and_close(self) -> None:
        code, reason = self._close_as
        # The client may be gone or not reading: closing is best-effort, and bounded.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_FLUSH_S):
                while (frame := self.outbox.pop()) is not None:
                    await self._write(frame)
                await self.socket.close(code, reason)

    async def _end_subscriptions(self) -> None:
        tasks = list(self.subscriptions.values())
        self.subscriptions.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self, frame: bytes) -> None:
        """The one place a frame is written to the socket."""
        await self.socket.send_data(frame.decode())

    async def _write_all(self) -> None:
        while True:
            await self._write(await self.outbox.next())

    async def _read_all(self) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] != "websocket.receive":
                return
            text = event.get("text")
            try:
                self._handle(decode_client(text if text is not None else event.get("bytes"),
                                           self.settings.ws_max_message_bytes))
            except BadMessage as bad:
                self._refuse(bad)

    def _refuse(self, bad: BadMessage) -> None:
        self.outbox.force(encode(ErrorFrame(code=bad.code, message=str(bad), job=bad.job)))
        now = time.monotonic()
        self._errors.append(now)
        while self._errors and self._errors[0] < now - ERROR_WINDOW_S:
            self._errors.popleft()
        if len(self._errors) > self.settings.ws_max_errors:
            self._close_as = (POLICY_VIOLATION, f"more than {self.settings.ws_max_errors} bad messages in a minute")
            self._close.set()

    def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            self.outbox.offer(encode(Pong()))  # a client that does not read needs no pong
            return
        target = target_of(message)
        if not isinstance(message, Subscribe):
            if self._stop(target):
                self.outbox.force(encode(EndFrame(reason="unsubscribed", **about(target))))
            return
        offset = subscribe_offset(message)
        self._check_covers(target)
        if target not in self.subscriptions and len(self.subscriptions) >= self.settings.ws_max_subscriptions:
            raise BadMessage(
                "too_many_subscriptions",
                f"a socket may hold {self.settings.ws_max_subscriptions} subscriptions; unsubscribe from one first",
                None if target == FEED else target,
            )
        if self._stop(target):
            # Subscribing again replaces the subscription: its end comes before the new ack.
            self.outbox.force(encode(EndFrame(reason="unsubscribed", **about(target))))
        if target == FEED:
            follow = self._follow_feed(offset, message.kind, message.state.value if message.state else None)
        else:
            follow = self._follow_job(target, offset)
        self.subscriptions[target] = asyncio.create_task(self._guarded(target, follow), name=f"jobtrail-ws-{target}")

    async def _guarded(self, target: str, follow: Coroutine[None, None, None]) -> None:
        """Run one subscription; a bug in it ends that subscription (resumable) with a logged error, not the socket."""
        try:
            await follow
        except Exception:
            log.exception("ws subscription to %s failed", target)
            self._ended(target, EndReason.UNAVAILABLE.value)

    def _stop(self, target: str) -> bool:
        """Cancel the subscription to `target`; whether there was one."""
        task = self.subscriptions.pop(target, None)
        if task is None:
            return False
        task.cancel()
        return True

    def _check_covers(self, target: str) -> None:
        job = self.principal.job
        if target == FEED and job is not None:
            raise BadMessage("not_covered", "this token is for one job, not the activity feed")
        if target != FEED and job is not None and job != target:
            raise BadMessage("not_covered", "this token is for another job", target)

    def _ended(self, target: str, reason: str) -> None:
        self.outbox.force(encode(EndFrame(reason=reason, **about(target))))
        if self.subscriptions.get(target) is asyncio.current_task():
            del self.subscriptions[target]

    async def _follow_job(self, job_id: str, after: str | None) -> None:
        offset = after or BEGINNING
        try:
            job = await self.events.visible_state(
                checked_job_id(job_id), self.principal.tenant, sees_all=self.principal.admin
            )
            gap = is_after(await self.events.max_deleted_id(job_id), offset)
        except JobNotFound:
            self._ended(job_id, "not found")
            return
        except RedisError as exc:
            log.warning("ws subscription to job %s failed: %s", job_id, exc)
            self._ended(job_id, EndReason.UNAVAILABLE.value)
            return
        if not self.outbox.offer(encode(Subscribed(job=job_id))):
            self._ended(job_id, EndReason.TOO_SLOW.value)
            return
        items = follow_job(self.events, self.hub, job, offset, gap=gap, ping_s=self.settings.sse_ping_s)

        def queued(item: JobItem) -> None:
            if isinstance(item, Event):
                self.events.metrics.delivered((item.id,), live_after=job.last_event_id)

        await self._forward(job_id, items, lambda item, shared: _job_frame(job_id, item, shared), queued)

    async def _follow_feed(self, after: str | None, kind: str | None, state: str | None) -> None:
        feed = self.events.activity.reader(None if self.principal.admin else self.principal.tenant)
        try:
            position = await feed.position()
        except RedisError as exc:
            log.warning("ws subscription to the feed failed: %s", exc)
            self._ended(FEED, EndReason.UNAVAILABLE.value)
            return
        # No `after`: the live tail only, as /events without an offset.
        offset = after or position.last_id
        gap = is_after(position.lost_up_to, offset)
        if not self.outbox.offer(encode(Subscribed(feed=True))):
            self._ended(FEED, EndReason.TOO_SLOW.value)
            return
        wanted = feed_filter(kind, state, self.principal.sees)
        items = follow_feed(feed, self.hub, position, offset, gap=gap, ping_s=self.settings.sse_ping_s, wanted=wanted)
        await self._forward(FEED, items, _feed_frame, lambda item: None)

    async def _forward(
        self,
        target: str,
        follow: AsyncGenerator[Batch[Any]],
        frame_of: Callable[[Any, bool], bytes | None],
        queued: Callable[[Any], None],
    ) -> None:
        """Queue the frame of each item of `follow` for `target` until its `End`, or until the outbox overflows."""
        async with contextlib.aclosing(follow) as batches:
            async for batch in batches:
                for item in batch.items:
                    if isinstance(item, End):
                        self._ended(target, item.reason.value)
                        return
                    frame = frame_of(item, batch.shared)
                    if frame is not None and not self.outbox.offer(frame):
                        self._ended(target, EndReason.TOO_SLOW.value)
                        return
                    queued(item)


def _job_frame(job_id: str, item: Event | Gap | Skipped | Idle, shared: bool) -> bytes | None:
    """The frame of one item of a job's follow; None for an idle tick (the transport's pings keep it alive).

    `shared`: the item is the hub's, offered to every follower (app/follow.py, Batch).
    """
    if isinstance(item, Event):
        if not shared:
            return _event_frame(job_id, item)
        # The item is one job's (its stream's) alone, so its frame may be shared by id.
        return FRAMES.frame(item, "ws", lambda event: _event_frame(job_id, event))
    if isinstance(item, Gap):
        return encode(JobGap(job=job_id, state=item.state))
    if isinstance(item, Skipped):
        return encode(SkippedFrame(job=job_id, id=item.id))
    return None


def _event_frame(job_id: str, event: Event) -> bytes:
    out = event.out()
    return encode(JobEventFrame(id=out.id, type=out.type, at=out.at, attempt=out.attempt, data=out.data, job=job_id))


def _feed_frame(item: Transition | FeedGap | Idle, shared: bool) -> bytes | None:
    if isinstance(item, Transition):
        if not shared:
            return _transition_frame(item)
        return FRAMES.frame(item, "ws", _transition_frame)
    if isinstance(item, FeedGap):
        return encode(FeedGapFrame(first_available=item.first_available))
    return None


def _transition_frame(transition: Transition) -> bytes:
    return encode(FeedEntryFrame(**msgspec.structs.asdict(transition)))

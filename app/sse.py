"""Server-sent events framing: the items of app/follow.py as an event stream's bytes.

The follow iterators decide what is sent and when a stream ends (and why resuming from
Last-Event-ID is exact); this module only writes each item as SSE blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import msgspec

from jobtrail.activity import FeedPosition, FeedReader, Transition
from jobtrail.eventlog import EventLog
from jobtrail.events import Event
from jobtrail.follow import (
    End,
    EndReason,
    FeedGap,
    FeedItem,
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
from jobtrail.jobstate import JobState
from jobtrail.offsets import is_after
from jobtrail.opening import FirstPage
from jobtrail.sse_frames import Framed, sse_event, sse_frames

_encode = msgspec.json.Encoder().encode


def sse_gap(state: JobState) -> bytes:
    # No `id:` line: the client's Last-Event-ID must stay at the last real event.
    return b"event: gap\ndata: %s\n\n" % _encode(state)


def sse_comment(text: str) -> bytes:
    return b": %s\n\n" % text.encode()


def sse_goodbye(reason: str, retry_ms: int) -> bytes:
    """The last block of a stream cut short: when to reconnect (`retry:`) and, as a comment, why."""
    return b"retry: %d\n: %s; reconnect to resume\n\n" % (retry_ms, reason.encode())


def sse_transition(transition: Transition) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        transition.id.encode(), transition.type.encode(), _encode(transition)
    )


def _sse_end(end: End, retry_ms: int) -> bytes:
    if end.reason is EndReason.TERMINAL:
        return b""
    if end.reason is EndReason.DELETED:
        return sse_comment(end.detail)
    return sse_goodbye(end.detail, retry_ms)


def _job_block(item: JobItem, shared: bool, retry_ms: int) -> bytes:
    if isinstance(item, Framed):
        return item.frame
    if isinstance(item, Event):
        return FRAMES.frame(item, "sse", sse_event) if shared else sse_event(item)
    if isinstance(item, Gap):
        return sse_gap(item.state)
    if isinstance(item, Skipped):
        # An `id:` without data moves the client's Last-Event-ID past the entry
        # (nothing is dispatched), so a reconnect does not meet it again.
        return b"id: %s\n: unreadable entry skipped\n\n" % item.id.encode()
    if isinstance(item, Idle):
        return sse_comment("ping")
    return _sse_end(item, retry_ms)


async def job_event_stream(
    events: EventLog,
    hub: Hub,
    job: JobState,
    offset: str,
    *,
    gap: bool,
    retry_ms: int,
    ping_s: float,
    first: FirstPage | None = None,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one job from `offset` (app/follow.py, follow_job), ending when the follow ends.

    After the terminal event it just ends; a deleted job's stream ends with `: job was
    deleted` (the client reconnects and meets a new job under the id from its beginning);
    any other end with a `retry:` hint and why. Each batch of the follow is one chunk, and
    the `retry:` hint goes out with the replay's first (or alone when it replays nothing):
    a chunk is a write, which costs more than the frames of a whole page. `first`: the
    replay's first page, read with `job` (app/opening.py). Replayed entries come as their
    frames already (app/sse_frames.py); the live tail's Events are framed once for all
    their followers (app/frames.py).
    """
    hint = b"retry: %d\n\n" % retry_ms
    live_after = job.last_event_id
    live = False  # once a batch reaches past `live_after`, every later one is past it too
    follow = follow_job(events, hub, job, offset, gap=gap, ping_s=ping_s, first=first, decode=sse_frames)
    async with contextlib.aclosing(follow) as batches:
        async for items, shared in batches:
            chunk = b"".join([hint, *[_job_block(item, shared, retry_ms) for item in items]])
            hint = b""
            if chunk:
                yield chunk
            # Replayed events (at or before the job's last event when the follow began) are
            # history, not lag: only a batch that ends after it has any to observe.
            if not live:
                newest = next((item for item in reversed(items) if isinstance(item, Event | Framed)), None)
                live = newest is not None and is_after(newest.id, live_after)
            if live:
                events.metrics.delivered((item.id for item in items if isinstance(item, Event | Framed)),
                                         live_after=live_after)


def _feed_block(item: FeedItem, shared: bool, retry_ms: int) -> bytes:
    if isinstance(item, Transition):
        return FRAMES.frame(item, "sse", sse_transition) if shared else sse_transition(item)
    if isinstance(item, FeedGap):
        # No `id:` line, as for a job's gap: Last-Event-ID stays at the last real entry.
        return b"event: gap\ndata: %s\n\n" % _encode({"first_available": item.first_available})
    if isinstance(item, Idle):
        return sse_comment("ping")
    return _sse_end(item, retry_ms)


async def activity_event_stream(
    feed: FeedReader,
    hub: Hub,
    position: FeedPosition,
    offset: str,
    *,
    gap: bool,
    retry_ms: int,
    ping_s: float,
    kind: str | None = None,
    state: str | None = None,
    sees: Callable[[str | None], bool] = lambda tenant: True,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one feed from `offset` (app/follow.py, follow_feed), open until the client leaves."""
    yield b"retry: %d\n\n" % retry_ms
    wanted = feed_filter(kind, state, sees)
    follow = follow_feed(feed, hub, position, offset, gap=gap, ping_s=ping_s, wanted=wanted)
    async with contextlib.aclosing(follow) as batches:
        async for items, shared in batches:
            if chunk := b"".join([_feed_block(item, shared, retry_ms) for item in items]):
                yield chunk

"""Server-sent events framing: the items of app/follow.py as an event stream's bytes.

The follow iterators decide what is sent and when a stream ends (and why resuming from
Last-Event-ID is exact); this module only writes each item as SSE blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec

from jobtrail.activity import FeedPosition, FeedReader, Transition
from jobtrail.eventlog import EventLog
from jobtrail.events import Event
from jobtrail.follow import End, EndReason, FeedGap, Gap, Idle, Skipped, feed_filter, follow_feed, follow_job
from jobtrail.frames import FRAMES
from jobtrail.hub import Hub
from jobtrail.jobstate import JobState

_encode = msgspec.json.Encoder().encode


def sse_event(event: Event) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.type.encode(), _encode(event.out()))


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


async def job_event_stream(
    events: EventLog,
    hub: Hub,
    job: JobState,
    offset: str,
    *,
    gap: bool,
    retry_ms: int,
    ping_s: float,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one job from `offset` (app/follow.py, follow_job), ending when the follow ends.

    After the terminal event it just ends; a deleted job's stream ends with `: job was
    deleted` (the client reconnects and meets a new job under the id from its beginning);
    any other end with a `retry:` hint and why.
    """
    yield b"retry: %d\n\n" % retry_ms
    async for item in follow_job(events, hub, job, offset, gap=gap, ping_s=ping_s):
        if isinstance(item, Event):
            yield FRAMES.frame(item, "sse", sse_event)
            events.metrics.delivered(item.id, live_after=job.last_event_id)
        elif isinstance(item, Gap):
            yield sse_gap(item.state)
        elif isinstance(item, Skipped):
            # An `id:` without data moves the client's Last-Event-ID past the entry
            # (nothing is dispatched), so a reconnect does not meet it again.
            yield b"id: %s\n: unreadable entry skipped\n\n" % item.id.encode()
        elif isinstance(item, Idle):
            yield sse_comment("ping")
        else:
            if block := _sse_end(item, retry_ms):
                yield block
            return


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
    async for item in follow_feed(feed, hub, position, offset, gap=gap, ping_s=ping_s, wanted=wanted):
        if isinstance(item, Transition):
            yield FRAMES.frame(item, "sse", sse_transition)
        elif isinstance(item, FeedGap):
            # No `id:` line, as for a job's gap: Last-Event-ID stays at the last real entry.
            yield b"event: gap\ndata: %s\n\n" % _encode({"first_available": item.first_available})
        elif isinstance(item, Idle):
            yield sse_comment("ping")
        else:
            yield _sse_end(item, retry_ms)
            return

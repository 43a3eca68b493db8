"""Server-sent events for one job (and for the activity feed): replay from an offset, then the live tail.

The order of operations is what makes resumption exact:
1. read the job's state (its last event id L) — done by the caller, for the 404;
2. subscribe to the hub from L, so everything appended after L will be queued;
3. replay with XRANGE from the client's offset to the end of the stream;
4. drain the queue, skipping ids already sent.
Anything appended during 3 is either in the replay or in the queue (or both, and the
id check drops the copy), so nothing is lost and nothing is sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import msgspec
from redis.exceptions import RedisError

from jobtrail.activity import FeedPosition, FeedReader, Transition, decode_transitions
from jobtrail.eventlog import EventLog, Unreadable
from jobtrail.events import Event, EventType
from jobtrail.hub import Hub, SubscriptionClosed
from jobtrail.jobstate import JobState
from jobtrail.offsets import is_after

log = logging.getLogger(__name__)

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
    """The SSE byte stream of one job from `offset`, ending after its terminal event.

    Or ending with `: job was deleted`: when the job's key is gone at a ping, or at once
    when the stream brings a `submitted` after the job's last event, which is a new job
    submitted under the deleted one's id (the same Idempotency-Key). Its events are
    not this stream's: the client reconnects and meets the new job from its beginning.
    """
    yield b"retry: %d\n\n" % retry_ms
    if gap:
        yield sse_gap(job)
    stream_key = events.keys.events(job.id)
    # An offset past the job's last event claims events that do not exist (a clock's
    # `now`, the largest id): it means "everything so far". Kept as is, it would make
    # the live tail drop every new event as already sent, the terminal one too, and
    # the stream would ping until the job expired.
    last = job.last_event_id if is_after(offset, job.last_event_id) else offset
    try:
        sub = await hub.subscribe(stream_key, after=job.last_event_id)
    except RedisError:
        yield sse_goodbye("event store unavailable", retry_ms)
        return
    try:
        async for event in events.readable(job.id, after=last):
            if isinstance(event, Unreadable):
                log.error("job %s: SSE replay steps over an unreadable entry: %s", job.id, event.error)
                # An `id:` without data moves the client's Last-Event-ID past the entry
                # (nothing is dispatched), so a reconnect does not meet it again.
                yield b"id: %s\n: unreadable entry skipped\n\n" % event.id.encode()
            else:
                if replaces(event, job):
                    yield sse_comment("job was deleted")
                    return
                yield sse_event(event)
                if event.terminal:
                    return
            last = event.id
        while True:
            event = await sub.get(timeout=ping_s)
            if event is None:
                if not await events.redis.exists(events.keys.job(job.id)):
                    yield sse_comment("job was deleted")
                    return
                yield sse_comment("ping")
                continue
            if not is_after(event.id, last):
                continue
            if replaces(event, job):
                yield sse_comment("job was deleted")
                return
            yield sse_event(event)
            events.metrics.delivered(event.id)
            last = event.id
            if event.terminal:
                return
    except SubscriptionClosed as closed:
        yield sse_goodbye(closed.reason, retry_ms)
    except RedisError as exc:
        log.warning("SSE stream of job %s ended: %s", job.id, exc)
        yield sse_goodbye("event store unavailable", retry_ms)
    finally:
        hub.unsubscribe(sub)


def replaces(event: Event, job: JobState) -> bool:
    """Whether `event` belongs to a new job under `job`'s id: `job`'s own `submitted` is at or before its last event."""
    return event.type is EventType.SUBMITTED and is_after(event.id, job.last_event_id)


# --- the activity feed: every job's transitions, never closing by itself ---

_FEED_PAGE = 500


def sse_transition(transition: Transition) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        transition.id.encode(), transition.type.encode(), _encode(transition)
    )


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
    """The SSE byte stream of one feed from `offset`, optionally filtered; open until the client leaves.

    Same order as `job_event_stream`: subscribe from the feed's newest id (read by the
    caller), replay with XRANGE, then the live tail, dropping ids already sent. An
    `offset` at that newest id (a client that gave none) replays only what was added since
    the caller read it. Only transitions of jobs whose tenant `sees` accepts are sent (a
    tenant's own feed holds no others; this is a second fence).
    """

    def wanted(t: Transition) -> bool:
        return sees(t.tenant) and (kind is None or t.kind == kind) and (state is None or t.state == state)

    yield b"retry: %d\n\n" % retry_ms
    if gap:
        # No `id:` line, as for a job's gap: Last-Event-ID stays at the last real entry.
        yield b"event: gap\ndata: %s\n\n" % _encode({"first_available": position.first_id})
    last = offset
    try:
        sub = await hub.subscribe(feed.key, after=position.last_id, decode=decode_transitions)
    except RedisError:
        yield sse_goodbye("event store unavailable", retry_ms)
        return
    try:
        while True:
            page = await feed.page(last, _FEED_PAGE)
            for transition in page:
                if wanted(transition):
                    yield sse_transition(transition)
                last = transition.id
            if len(page) < _FEED_PAGE:
                break
        while True:
            transition = await sub.get(timeout=ping_s)
            if transition is None:
                yield sse_comment("ping")
                continue
            if not is_after(transition.id, last):
                continue
            if wanted(transition):
                yield sse_transition(transition)
            last = transition.id
    except SubscriptionClosed as closed:
        yield sse_goodbye(closed.reason, retry_ms)
    except RedisError as exc:
        log.warning("SSE activity stream ended: %s", exc)
        yield sse_goodbye("event store unavailable", retry_ms)
    finally:
        hub.unsubscribe(sub)

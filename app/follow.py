"""Following a job's events (or the activity feed): replay from an offset, then the live tail, as typed items.

One protocol for every transport: SSE (app/sse.py) and the WebSocket (app/api/ws.py) only
encode what these iterators yield. The order of operations is what makes resumption exact:
1. read the job's state (its last event id L) — done by the caller, for the 404;
2. subscribe to the hub from L: it returns once Redis confirmed the SSUBSCRIBE of the
   stream's wake channel (app/hub.py), so every append from then on wakes the hub, which
   reads the stream after its cursor (at most L) and queues what it finds;
3. replay with XRANGE from the client's offset to the end of the stream;
4. drain the queue, skipping ids already sent.
An event appended before the confirmation in 2 is in the stream when 3 reads it; one
appended after it publishes a wake that the hub acts on (and were that wake lost, the hub
reads the stream again on reconnecting, or in its sweep). So each event is in the replay or
in the queue (or both, and the id check drops the copy): nothing is lost and nothing is
yielded twice.

Every follow ends with one `End` saying why; the items before it carry ids (events,
transitions, `Skipped`), and a client that resumes after the last id it got misses
nothing whatever the reason was.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncGenerator, Callable

import msgspec
from redis.exceptions import RedisError

from jobtrail.activity import FeedPosition, FeedReader, Transition, decode_transitions
from jobtrail.eventlog import EventLog, Unreadable
from jobtrail.events import Event, EventType
from jobtrail.hub import FELL_BEHIND, REDIS_LOST, SHUTTING_DOWN, UNREADABLE, Hub, SubscriptionClosed
from jobtrail.jobstate import JobState
from jobtrail.offsets import is_after

log = logging.getLogger(__name__)


class EndReason(enum.StrEnum):
    """Why a follow ended; the values are what the WebSocket protocol sends."""

    TERMINAL = "terminal"  # the job's terminal event was the last item
    DELETED = "deleted"  # the job is gone, or its id now names a new job
    SERVER_STOPPING = "server stopping"
    UNAVAILABLE = "event store unavailable"
    TOO_SLOW = "too slow"
    UNREADABLE = "unreadable entry"  # the live tail met an entry it cannot decode; a replay steps over it

    @property
    def resumable(self) -> bool:
        """Whether following again from the last id continues the same job's events."""
        return self not in (EndReason.TERMINAL, EndReason.DELETED)


_HUB_REASONS = {
    SHUTTING_DOWN: EndReason.SERVER_STOPPING,
    FELL_BEHIND: EndReason.TOO_SLOW,
    REDIS_LOST: EndReason.UNAVAILABLE,
    UNREADABLE: EndReason.UNREADABLE,
}


class Gap(msgspec.Struct, frozen=True):
    """History after the offset was trimmed: the job's state stands in for what is gone."""

    state: JobState


class FeedGap(msgspec.Struct, frozen=True):
    """Feed entries after the offset were trimmed; the oldest one kept (None: the feed is empty)."""

    first_available: str | None


class Skipped(msgspec.Struct, frozen=True):
    """An entry that cannot be decoded was stepped over: a client's cursor moves past `id`."""

    id: str


class Idle(msgspec.Struct, frozen=True):
    """Nothing new for a ping interval: the transport may send a keep-alive."""


class End(msgspec.Struct, frozen=True):
    """The follow is over; `detail` says why in words (what SSE writes in its goodbye)."""

    reason: EndReason
    detail: str

    @classmethod
    def closed(cls, closed: SubscriptionClosed) -> End:
        return cls(_HUB_REASONS.get(closed.reason, EndReason.UNAVAILABLE), closed.reason)


JobItem = Event | Gap | Skipped | Idle | End
FeedItem = Transition | FeedGap | Idle | End

_DELETED = End(EndReason.DELETED, "job was deleted")
_TERMINAL = End(EndReason.TERMINAL, "job finished")
_UNAVAILABLE = End(EndReason.UNAVAILABLE, REDIS_LOST)


def replaces(event: Event, job: JobState) -> bool:
    """Whether `event` belongs to a new job under `job`'s id: `job`'s own `submitted` is at or before its last event."""
    return event.type is EventType.SUBMITTED and is_after(event.id, job.last_event_id)


async def follow_job(
    events: EventLog, hub: Hub, job: JobState, offset: str, *, gap: bool, ping_s: float
) -> AsyncGenerator[JobItem]:
    """The items of one job after `offset`: a `Gap` first when `gap`, then its events, then one `End`.

    Ends `terminal` after the terminal event (at once when the client already has it),
    `deleted` when the job's key is gone at an idle ping, or at once when the stream brings
    a `submitted` after the job's last event: a new job submitted under the deleted one's
    id (the same Idempotency-Key), whose events are not this follow's. Otherwise the hub's
    reason (server stopping, too slow, Redis gone), after which resuming is exact.
    """
    if gap:
        yield Gap(job)
    # An offset past the job's last event claims events that do not exist (a clock's
    # `now`, the largest id): it means "everything so far". Kept as is, it would make
    # the live tail drop every new event as already sent, the terminal one too, and
    # the follow would idle until the job expired.
    last = job.last_event_id if is_after(offset, job.last_event_id) else offset
    if job.terminal and not is_after(job.last_event_id, last):
        yield _TERMINAL
        return
    try:
        sub = await hub.subscribe(events.keys.events(job.id), after=job.last_event_id)
    except RedisError:
        yield _UNAVAILABLE
        return
    try:
        async for event in events.readable(job.id, after=last):
            if isinstance(event, Unreadable):
                log.error("job %s: replay steps over an unreadable entry: %s", job.id, event.error)
                yield Skipped(event.id)
            else:
                if replaces(event, job):
                    yield _DELETED
                    return
                yield event
                if event.terminal:
                    yield _TERMINAL
                    return
            last = event.id
        while True:
            event = await sub.get(timeout=ping_s)
            if event is None:
                if not await events.redis.exists(events.keys.job(job.id)):
                    yield _DELETED
                    return
                yield Idle()
                continue
            if not is_after(event.id, last):
                continue
            if replaces(event, job):
                yield _DELETED
                return
            yield event
            last = event.id
            if event.terminal:
                yield _TERMINAL
                return
    except SubscriptionClosed as closed:
        yield End.closed(closed)
    except RedisError as exc:
        log.warning("following job %s ended: %s", job.id, exc)
        yield _UNAVAILABLE
    finally:
        hub.unsubscribe(sub)


_FEED_PAGE = 500


def feed_filter(
    kind: str | None, state: str | None, sees: Callable[[str | None], bool]
) -> Callable[[Transition], bool]:
    """Which transitions a feed follower gets: of jobs whose tenant `sees` accepts, of `kind`, into `state`."""

    def wanted(t: Transition) -> bool:
        return sees(t.tenant) and (kind is None or t.kind == kind) and (state is None or t.state == state)

    return wanted


async def follow_feed(
    feed: FeedReader,
    hub: Hub,
    position: FeedPosition,
    offset: str,
    *,
    gap: bool,
    ping_s: float,
    wanted: Callable[[Transition], bool],
) -> AsyncGenerator[FeedItem]:
    """The feed's transitions after `offset` that are `wanted`, replay then live; only an `End` stops it.

    Same order as `follow_job`: subscribe from the feed's newest id (read by the caller),
    replay with XRANGE, then the live tail, dropping ids already yielded. An `offset` at
    that newest id (a client that gave none) replays only what was added since the caller
    read it. `wanted` is a second fence too: a tenant's own feed holds no other tenant's jobs.
    """
    if gap:
        yield FeedGap(position.first_id)
    last = offset
    try:
        sub = await hub.subscribe(feed.key, after=position.last_id, decode=decode_transitions)
    except RedisError:
        yield _UNAVAILABLE
        return
    try:
        while True:
            page = await feed.page(last, _FEED_PAGE)
            for transition in page:
                if wanted(transition):
                    yield transition
                last = transition.id
            if len(page) < _FEED_PAGE:
                break
        while True:
            transition = await sub.get(timeout=ping_s)
            if transition is None:
                yield Idle()
                continue
            if not is_after(transition.id, last):
                continue
            if wanted(transition):
                yield transition
            last = transition.id
    except SubscriptionClosed as closed:
        yield End.closed(closed)
    except RedisError as exc:
        log.warning("following the activity feed ended: %s", exc)
        yield _UNAVAILABLE
    finally:
        hub.unsubscribe(sub)

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

Items come in batches (`Batch`): a replay page, or everything the hub queued while the
follower was busy writing. A transport writes a batch as one unit, so a client that fell
a little behind (or 1,000 clients on one job, served in turn) catches up in one write,
and a replay of 100,000 events is a hundred writes, not 100,000.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

import msgspec
from redis.exceptions import RedisError

from jobtrail.activity import FeedPosition, FeedReader, Transition, decode_transitions
from jobtrail.eventlog import EventLog, Unreadable, readable_raw_entries
from jobtrail.events import Event, EventType
from jobtrail.hub import FELL_BEHIND, REDIS_LOST, SHUTTING_DOWN, UNREADABLE, Hub, Subscription, SubscriptionClosed
from jobtrail.jobstate import JobState
from jobtrail.offsets import is_after
from jobtrail.opening import FirstPage
from jobtrail.replay_pages import RawEntry
from jobtrail.sse_frames import Framed, Replayed

log = logging.getLogger(__name__)

T = TypeVar("T")


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


JobItem = Event | Framed | Gap | Skipped | Idle | End
# Makes a replay page's items from its raw entries: Events, or SSE frames already (app/sse_frames.py).
PageDecoder = Callable[[list[RawEntry]], Sequence[Replayed]]
FeedItem = Transition | FeedGap | Idle | End

_DELETED = End(EndReason.DELETED, "job was deleted")
_TERMINAL = End(EndReason.TERMINAL, "job finished")
_UNAVAILABLE = End(EndReason.UNAVAILABLE, REDIS_LOST)
_IDLE = Idle()

# Events one replay XRANGE takes, and so the most one batch of a replay holds.
REPLAY_PAGE = 1000
# A busy live tail yields at most one batch per this long: what the hub offers meanwhile
# joins the next batch. A write to a client's socket costs the process about as much CPU
# as encoding 30 events (30 us here), and a job reporting as fast as a worker writes wakes
# its follower every few ms, a write each; a tail quieter than this is never held back.
LINGER_S = 0.005


class Batch(NamedTuple, Generic[T]):
    """Items that were ready at once: a replay page, or all the hub queued while the follow was busy.

    A transport writes a batch as one unit (one SSE chunk), so 1,000 events queued for a
    slow client cost one write, not 1,000; an empty one says a job's replay is over and
    found nothing, so what a transport holds back goes out. `shared`: the items are the hub's, the very
    objects every follower of the stream gets, and the stream has other followers now, so a
    frame built for one of them is worth keeping for the others (app/frames.py); a replay's
    items are this follow's own, and a lone follower's cache would only be filled, never hit.
    """

    items: list[T]
    shared: bool = False


async def _lingered(sub: Subscription, live: list[T], sent_at: float) -> list[T]:
    """`live`, and what the hub offers until LINGER_S after the last batch was handed over at `sent_at`."""
    wait = sent_at + LINGER_S - asyncio.get_running_loop().time()
    if wait <= 0:
        return live
    await asyncio.sleep(wait)
    return live + sub.take()


def replaces(event: Event | Framed, job: JobState) -> bool:
    """Whether `event` belongs to a new job under `job`'s id: `job`'s own `submitted` is at or before its last event."""
    return event.type is EventType.SUBMITTED and is_after(event.id, job.last_event_id)


def _job_items(
    entries: Sequence[Replayed], job: JobState, last: str, items: list[JobItem]
) -> tuple[str, bool]:
    """Add to `items` those of `entries` after `last`, up to an `End` if one is due; (new last id, ended)."""
    after = False  # entries come in order: once one is after `last`, all that follow are
    for event in entries:
        if isinstance(event, Unreadable):
            log.error("job %s: replay steps over an unreadable entry: %s", job.id, event.error)
            items.append(Skipped(event.id))
        elif not (after or (after := is_after(event.id, last))):
            continue
        elif replaces(event, job):
            items.append(_DELETED)
            return last, True
        else:
            items.append(event)
            if event.terminal:
                items.append(_TERMINAL)
                return event.id, True
        last = event.id
    return last, False


async def _replay(
    events: EventLog, job_id: str, after: str, until: str, first: FirstPage | None, decode: PageDecoder
) -> AsyncIterator[Sequence[Replayed]]:
    """The replay's pages after `after` up to `until` (the hub's cursor when the follow joined; `+`: all).

    After `first` (read with the job's state, app/opening.py, and sent already) only what
    lies past its reach is read: nothing, unless the page was full or the hub's cursor is
    further on.
    """
    if first is not None:
        # Never past `after`: an offset beyond the job's last event read an empty page there.
        reach = after if is_after(first.reach, after) else first.reach
        if not first.full and until != "+" and not is_after(until, reach):
            return
        after = reach
    async for page in events.decoded_pages(job_id, decode, after=after, page_size=REPLAY_PAGE, until=until):
        yield page


async def _given(page: Sequence[Replayed]) -> AsyncIterator[Sequence[Replayed]]:
    yield page


class _Replay:
    """A job's replay so far: the items not yet sent (a `Gap`), the last id sent, whether it sent any or ended."""

    __slots__ = ("ended", "items", "last", "sent")

    def __init__(self, items: list[JobItem], last: str) -> None:
        self.items = items
        self.last = last
        self.sent = False
        self.ended = False

    async def batches(
        self, pages: AsyncIterator[Sequence[Replayed]], job: JobState
    ) -> AsyncIterator[Batch[JobItem]]:
        """A batch per page of items after the last id sent, until one ends the follow (`ended`)."""
        async for page in pages:
            self.last, self.ended = _job_items(page, job, self.last, self.items)
            if self.items:
                self.sent = True
                yield Batch(self.items)
                self.items = []
            if self.ended:
                return


async def follow_job(
    events: EventLog, hub: Hub, job: JobState, offset: str, *, gap: bool, ping_s: float,
    first: FirstPage | None = None, decode: PageDecoder = readable_raw_entries,
) -> AsyncGenerator[Batch[JobItem]]:
    """The items of one job after `offset`, in batches: a `Gap` first when `gap`, then its events, then one `End`.

    Ends `terminal` after the terminal event (at once when the client already has it),
    `deleted` when the job's key is gone at an idle ping, or at once when the stream brings
    a `submitted` after the job's last event: a new job submitted under the deleted one's
    id (the same Idempotency-Key), whose events are not this follow's. Otherwise the hub's
    reason (server stopping, too slow, Redis gone), after which resuming is exact.

    `first`: the replay's first page, read with `job` (app/opening.py). It goes out before
    the hub's subscription is confirmed, which under load (the confirmation waits behind
    every wake already on the pub/sub connection) was most of an observer's wait for the
    events its job wrote before it connected; and a finished job whose terminal event is in
    it ends with no subscription at all. Its entries are in the stream whatever the hub
    does, and the replay after the subscription goes on after them.

    `decode` makes a replay page's items from its raw entries: Events by default, SSE
    frames for app/sse.py. The live tail's items are the hub's Events whatever it is.
    """
    items: list[JobItem] = [Gap(job)] if gap else []
    # An offset past the job's last event claims events that do not exist (a clock's
    # `now`, the largest id): it means "everything so far". Kept as is, it would make
    # the live tail drop every new event as already sent, the terminal one too, and
    # the follow would idle until the job expired.
    start = last = job.last_event_id if is_after(offset, job.last_event_id) else offset
    if job.terminal and not is_after(job.last_event_id, last):
        yield Batch([*items, _TERMINAL])
        return
    replay = _Replay(items, last)
    if first is not None:
        async for batch in replay.batches(_given(decode(first.entries)), job):
            yield batch
        if replay.ended:
            return
    try:
        sub = await hub.subscribe(events.keys.events(job.id), after=job.last_event_id)
    except RedisError:
        yield Batch([*replay.items, _UNAVAILABLE])
        return
    try:
        # Up to where the hub took over (`sub.start`): what comes after it, the hub offers,
        # and reading it here too would decode it twice.
        async for batch in replay.batches(_replay(events, job.id, start, sub.start, first, decode), job):
            yield batch
        if replay.ended:
            return
        if not replay.sent:
            yield Batch([])  # the replay is over: a transport holding something back sends it
        last = replay.last
        sent_at = -LINGER_S
        while True:
            live = await sub.get_all(timeout=ping_s)
            if not live:
                if not await events.redis.exists(events.keys.job(job.id)):
                    yield Batch([_DELETED])
                    return
                yield Batch([_IDLE])
                continue
            live = await _lingered(sub, live, sent_at)
            items = []
            last, ended = _job_items(live, job, last, items)
            if items:
                yield Batch(items, shared=sub.shared)
                sent_at = asyncio.get_running_loop().time()
            if ended:
                return
    except SubscriptionClosed as closed:
        yield Batch([End.closed(closed)])
    except RedisError as exc:
        log.warning("following job %s ended: %s", job.id, exc)
        yield Batch([_UNAVAILABLE])
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
) -> AsyncGenerator[Batch[FeedItem]]:
    """The feed's transitions after `offset` that are `wanted`, replay then live, in batches; only an `End` stops it.

    Same order as `follow_job`: subscribe from the feed's newest id (read by the caller),
    replay with XRANGE, then the live tail, dropping ids already yielded. An `offset` at
    that newest id (a client that gave none) replays only what was added since the caller
    read it. `wanted` is a second fence too: a tenant's own feed holds no other tenant's jobs.
    """
    items: list[FeedItem] = [FeedGap(position.first_id)] if gap else []
    last = offset
    try:
        sub = await hub.subscribe(feed.key, after=position.last_id, decode=decode_transitions)
    except RedisError:
        yield Batch([*items, _UNAVAILABLE])
        return
    try:
        while True:
            page = await feed.page(last, _FEED_PAGE)
            items += [transition for transition in page if wanted(transition)]
            if page:
                last = page[-1].id
            if items:
                yield Batch(items)
            items = []
            if len(page) < _FEED_PAGE:
                break
        loop = asyncio.get_running_loop()
        sent_at = -LINGER_S
        while True:
            live = await sub.get_all(timeout=ping_s)
            if not live:
                yield Batch([_IDLE])
                continue
            live = await _lingered(sub, live, sent_at)
            fresh = [transition for transition in live if is_after(transition.id, last)]
            if fresh:
                last = fresh[-1].id
                items = [transition for transition in fresh if wanted(transition)]
                if items:
                    yield Batch(items, shared=sub.shared)
                    sent_at = loop.time()
    except SubscriptionClosed as closed:
        yield Batch([End.closed(closed)])
    except RedisError as exc:
        log.warning("following the activity feed ended: %s", exc)
        yield Batch([_UNAVAILABLE])
    finally:
        hub.unsubscribe(sub)

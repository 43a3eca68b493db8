"""The activity feed: capped streams of jobs' state transitions, one for everybody and one per tenant.

It is derived and best-effort (DESIGN.md, Keys): `EventLog.append` adds an entry after
a transition is committed to the job's own stream, in a second round trip (a submission
pipelines it with the job's index entries), because the feed's keys are in other Redis
Cluster slots than the job's keys. If that write fails the
append still stands; the job's stream stays the truth.

A tenant's job goes into two streams in that one round trip (a pipeline): the global feed,
which an admin reads, and its tenant's own feed, which that tenant's keys and tokens read.
So what a tenant's `GET /events` reads never grows with other tenants' traffic. The two
entries of one transition have different ids; a client resumes with the ids of the feed it
reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import msgspec
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from jobtrail.events import RULES, EventType, ms_to_datetime
from jobtrail.keys import Keys
from jobtrail.offsets import BEGINNING, previous_id

# What the feed records: every event that changes a job's state, and cancel requests.
ACTIVITY_TYPES = frozenset(t for t, rule in RULES.items() if rule.next_state is not None) | {
    EventType.CANCEL_REQUESTED
}


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One feed entry, as `GET /events` sends it; `id` is the feed's entry id."""

    id: str
    job_id: str
    kind: str | None
    type: str
    state: str
    at: datetime
    event_id: str  # the event's id in the job's own stream
    attempt: int
    tenant: str | None = None

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Transition:
        return cls(
            id=entry_id,
            job_id=fields["job_id"],
            kind=fields.get("kind") or None,
            type=fields["type"],
            state=fields["state"],
            at=ms_to_datetime(int(fields["at"])),
            event_id=fields["event_id"],
            attempt=int(fields.get("attempt") or 0),
            tenant=fields.get("tenant") or None,
        )


def decode_transitions(entries: Iterable[tuple[str, dict[str, str]]]) -> list[Transition]:
    return [Transition.from_entry(entry_id, fields) for entry_id, fields in entries]


class FeedNote(NamedTuple):
    """What the feed records of one transition; `event_id` is the event's id in the job's stream."""

    job_id: str
    kind: str
    event_type: EventType
    state: str
    at: int
    event_id: str
    attempt: int
    tenant: str = ""


class FeedPosition(msgspec.Struct, frozen=True):
    """Where the feed stands: its newest id, its oldest kept id, the newest id it lost."""

    last_id: str
    first_id: str | None
    lost_up_to: str  # `0-0` when nothing was trimmed


class FeedReader:
    """Reads one feed stream (the global one or a tenant's); its entry ids are what its clients resume by."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def page(self, after: str = BEGINNING, limit: int = 500) -> list[Transition]:
        """Up to `limit` entries after `after`, oldest first (one XRANGE)."""
        return decode_transitions(await self.redis.xrange(self.key, min=f"({after}", max="+", count=limit))

    async def position(self) -> FeedPosition:
        """Newest id, oldest kept id and the newest id the cap trimmed (one XINFO).

        Redis 7.0 does not record trimming in max-deleted-entry-id, so when entries
        were added that the stream no longer holds, everything before its first entry
        counts as lost (a client just before it may see a gap it did not need).
        """
        try:
            if isinstance(self.redis, RedisCluster):
                # redis-py's Cluster cannot find the key of XINFO STREAM; its node is named here.
                node = self.redis.get_node_from_key(self.key)
                info = await self.redis.execute_command("XINFO STREAM", self.key, target_nodes=node)
            else:
                info = await self.redis.xinfo_stream(self.key)
        except ResponseError:  # no such key: nothing was ever recorded
            return FeedPosition(last_id=BEGINNING, first_id=None, lost_up_to=BEGINNING)
        last = info.get("last-generated-id") or BEGINNING
        first = info["first-entry"][0] if info.get("first-entry") else None
        lost = info.get("max-deleted-entry-id") or BEGINNING
        if lost == BEGINNING and int(info.get("entries-added") or 0) > int(info.get("length") or 0):
            lost = previous_id(first) if first else last
        return FeedPosition(last_id=last, first_id=first, lost_up_to=lost)


class ActivityFeed:
    """Writes the capped feed streams under one key prefix, and hands out their readers."""

    def __init__(self, redis: Redis, keys: Keys, maxlen: int) -> None:
        # maxlen 0 turns the feed off (nothing is written); each stream is capped at maxlen.
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen

    def records(self, event_type: EventType) -> bool:
        return self.maxlen > 0 and event_type in ACTIVITY_TYPES

    def reader(self, tenant: str | None) -> FeedReader:
        """The feed of `tenant`'s jobs; None: the global feed of every job."""
        return FeedReader(self.redis, self.keys.activity() if tenant is None else self.keys.tenant_activity(tenant))

    def queue_record(self, pipe: Pipeline, note: FeedNote) -> None:
        """Queue one transition's XADDs on `pipe`: the global feed's first, then its tenant's.

        Each XADD trims its stream to about `maxlen` entries.
        """
        self.queue_records(pipe, (note,))

    def queue_records(self, pipe: Pipeline, notes: Iterable[FeedNote]) -> None:
        """Queue the XADDs of `notes` in order (each as `queue_record`'s), then one wake per feed they wrote to.

        After the XADDs, on their nodes (each channel is in its feed's slot): the hubs that
        follow a feed read what is new in it on this wake (app/hub.py), so one wake serves
        every entry before it. No id: it is not known yet.
        """
        woken: dict[str, None] = {}  # in order, once each
        for note in notes:
            fields = {"job_id": note.job_id, "type": note.event_type.value, "state": note.state, "at": note.at,
                      "event_id": note.event_id, "attempt": note.attempt}
            if note.kind:
                fields["kind"] = note.kind
            if note.tenant:
                fields["tenant"] = note.tenant
            # `~` lets Redis trim whole stream nodes (about 100 entries), which is cheap.
            feed = self.keys.activity()
            pipe.xadd(feed, fields, maxlen=self.maxlen, approximate=True)
            woken[feed] = None
            if note.tenant:
                tenant_feed = self.keys.tenant_activity(note.tenant)
                pipe.xadd(tenant_feed, fields, maxlen=self.maxlen, approximate=True)
                woken[tenant_feed] = None
        for feed in woken:
            pipe.spublish(self.keys.wake(feed), "")

    async def record(self, note: FeedNote) -> str:
        """Add one transition to the global feed and its tenant's (one round trip); its global feed id."""
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_record(pipe, note)
            ids = await pipe.execute()
        return ids[0]

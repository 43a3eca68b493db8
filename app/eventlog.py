"""The event log: append events to a job's stream and read its state and history.

Every method documents its Redis round trips; appends are one EVALSHA each, plus one
XADD to the activity feed (app/activity.py) for a state transition.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from importlib import resources
from typing import Any, NamedTuple, NoReturn, TypeVar

import msgspec
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from jobtrail.activity import ActivityFeed, FeedNote
from jobtrail.errors import AttemptSuperseded, JobExists, JobNotFound, JobReplaced, TransitionRefused
from jobtrail.events import (
    ABSENT,
    RULES,
    TERMINAL_STATES,
    TYPE_CODES,
    CorruptEvent,
    Event,
    EventType,
    check_data,
    entry_type,
    pack_data,
)
from jobtrail.jobstate import JobState, dedupe_fields, state_fields
from jobtrail.keys import Keys
from jobtrail.metrics import Metrics
from jobtrail.offsets import BEGINNING, previous_id
from jobtrail.reducer import fields_for, fold
from jobtrail.replay_pages import RawEntry, entry_fields, raw_pages
from jobtrail.replicawait import ReplicaWait

log = logging.getLogger(__name__)

T = TypeVar("T")

# Runs what a function queues on a pipeline, in a round trip it may share; its replies, errors as values.
SharedRun = Callable[[Callable[[Pipeline], object]], Awaitable[list[Any]]]

_VISIBLE_SCRIPT = resources.files("jobtrail").joinpath("visible.lua").read_text()


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_append_script(name: str = "append.lua", prelude: str = "") -> str:
    """append.lua (or `name`, append_many.lua) with the transition table rendered into its header.

    As a chain of `if`s that returns the rule of the event at hand as plain values, its
    allowed states one string: a script's locals are built again on every call, and
    tables cost more than the rest of a progress append's Lua. The type's code comes as a
    number and as its two digits, for append.lua to write `attempt * 100 + code` by
    concatenating strings (a number's tostring costs as much as a command's argument).
    """
    lines = ["local RULE_OF = function(etype)"]
    for n, (event_type, rule) in enumerate(RULES.items()):
        allowed = _lua_string(" " + " ".join(sorted(rule.allowed)) + " ")
        nxt = _lua_string(rule.next_state) if rule.next_state else "nil"
        stamp = _lua_string(rule.stamp) if rule.stamp else "nil"
        attempt = _lua_string(rule.attempt) if rule.attempt else "nil"
        opens = "true" if rule.opens else "false"
        lines.append(
            f"  {'if' if n == 0 else 'elseif'} etype == {_lua_string(event_type)} then return "
            f"{allowed}, {nxt}, {stamp}, {attempt}, {opens}, {TYPE_CODES[event_type]}, "
            f"{_lua_string(f'{TYPE_CODES[event_type]:02d}')}"
        )
    lines.append("  end")
    lines.append("end")
    terminal = " or ".join(f"state == {_lua_string(s)}" for s in sorted(TERMINAL_STATES))
    lines.append(f"local IS_TERMINAL = function(state) return {terminal} end")
    lines.append(f"local ABSENT = {_lua_string(ABSENT)}")
    body = resources.files("jobtrail").joinpath(name).read_text()
    if prelude:  # a script of its own that ends in `name`'s body (start.lua)
        body = resources.files("jobtrail").joinpath(prelude).read_text() + "\n" + body
    return "\n".join(lines) + "\n" + body


class Appended(msgspec.Struct, frozen=True):
    """What an append did: the event's id and the job's state after it.

    A new write (not a duplicate) also says its `at` and `attempt`, and its activity-feed
    entry in `feed` when the caller asked to write that itself (`defer_feed`). `replicas` is
    how many replicas confirmed it when the log waits for them (app/replicawait.py), else None.
    """

    id: str
    state: str
    cancel_requested: bool
    duplicate: bool = False
    at: int = 0
    attempt: int = 0
    feed: FeedNote | None = None
    replicas: int | None = None
    after: tuple[Any, ...] = ()  # the replies of the append's `after` commands, errors included


class Unreadable(NamedTuple):
    """A stream entry that does not decode as an event, and why."""

    id: str
    error: CorruptEvent


class EventLog:
    """Appends and reads the events and state of jobs under one key prefix."""

    def __init__(
        self, redis: Redis, keys: Keys, retention_s: int, *, activity_maxlen: int, metrics: Metrics | None = None,
        replica_wait: ReplicaWait | None = None,
    ) -> None:
        self.redis = redis
        # JOBTRAIL_WAIT_REPLICAS; None (or 0 replicas) appends without waiting for any.
        self.replica_wait = replica_wait
        # The process's (app/services.py); without them, metrics of its own that nobody scrapes.
        self.metrics = metrics or Metrics(tenant_label=False)
        self.keys = keys
        self.retention_s = retention_s
        self.activity = ActivityFeed(redis, keys, activity_maxlen)
        self._append = redis.register_script(render_append_script())
        self._append_many = redis.register_script(render_append_script("append_many.lua"))
        self._start = redis.register_script(render_append_script(prelude="start.lua"))
        self._visible = redis.register_script(_VISIBLE_SCRIPT)

    # --- writing ---

    async def append(
        self,
        job_id: str,
        event_type: EventType,
        data: msgspec.Struct | dict[str, Any] | None = None,
        *,
        attempt: int | None = None,
        key: str | None = None,
        at_ms: int | None = None,
        retention_s: int | None = None,
        incarnation: str | None = None,
        slot: str | None = None,
        before: Callable[[Pipeline], object] | None = None,
        after: Callable[[Pipeline], object] | None = None,
        defer_feed: bool = False,
        shared: SharedRun | None = None,
    ) -> Appended:
        """Append one event (one round trip). Raises JobNotFound, JobExists or TransitionRefused.

        An explicit `attempt` must be the job's current one (the next one for `started`),
        else AttemptSuperseded (a TransitionRefused) and nothing is written. An explicit
        `incarnation` (see `state_and_incarnation`) must be the job's, else JobReplaced (a
        TransitionRefused) and nothing is written: workers name both.

        `at_ms` keeps an original timestamp; `retention_s` replaces the configured retention
        (the TTL a terminal event gives the job's keys), e.g. to keep an imported job's TTL.
        A state transition (or a cancel request) takes a second round trip afterwards, to
        the activity feed; a failure there is logged and never fails the append. With
        `defer_feed` that entry comes back as `Appended.feed` instead, for the caller to
        write in a pipeline of its own (`ActivityFeed.queue_record`).

        `before` queues commands that must reach Redis ahead of the append, in the same
        round trip (a pipeline, not a transaction: they may be in other slots). They are
        sent again with it if the script has to be loaded first; an error of theirs raises
        after the append was attempted, so the caller's retry must be safe (`key`).
        `after` queues commands behind it in that round trip; they run whatever the append
        answered (and again if the script had to be loaded), so they must check what they
        depend on themselves. Their replies, errors included, come back in `Appended.after`
        of an append that returns.

        `slot` names where the job remembers `key`, for a writer whose appends go out one
        at a time (a job context): the slot keeps its latest key alone, which is the only
        one a retry can repeat, as a field of the job's state hash (append.lua's header says
        which keys live there and which in the dedupe hash).

        With a `replica_wait`, a submission or terminal event also waits (in the same round
        trip) for that many replicas, up to its timeout; `Appended.replicas` says how many
        confirmed it. A duplicate waits only for what its own connection wrote, not for the
        original write, which an earlier connection made.
        """
        args = self._args(event_type, data, attempt, key, at_ms, retention_s, incarnation, slot)
        wait = self.replica_wait if self.replica_wait and self.replica_wait.applies_to(event_type) else None
        began = time.perf_counter()
        terminal = RULES[event_type].next_state in TERMINAL_STATES
        keys = list(self.keys.append_keys(job_id, terminal=terminal))
        reply, wait_reply, after_replies = await self._run_append(keys, args, before, after, wait, shared=shared)
        replicas = None
        if wait is not None and (isinstance(reply, str) or reply[0] == "duplicate"):
            replicas = wait.confirmed(wait_reply, job_id, event_type)
        self.metrics.append_took(time.perf_counter() - began)
        return await self._appended(job_id, event_type, reply, attempt, at_ms, replicas, after_replies, defer_feed)

    async def start(
        self, job_id: str, data: msgspec.Struct, *, lease: tuple[str, str, int],
        before: Callable[[Pipeline], object] | None = None, after: Callable[[Pipeline], object] | None = None,
        shared: SharedRun | None = None,
    ) -> tuple[Appended | None, bool, tuple[Any, ...]]:
        """Take the job's lease (key, token, ttl ms) and start its next attempt, in one round trip (start.lua).

        Returns the `started` append (None when nothing was appended), whether the lease
        was taken, and the replies of `after`'s commands. The attempt is the one after
        the job's, its key `started:<attempt>`; it is started only when the job waits
        for it (pending, not asked to cancel), else the lease is taken all the same and
        the caller reads what to do from the job's state (`after`). Its feed entry comes
        back in `Appended.feed`. Raises as `append` does for what append.lua refuses.
        With `shared`, the round trip is one shared with other callers', as `append`'s.
        """
        key, token, ttl_ms = lease
        args = [*self._args(EventType.STARTED, data, None, "", None, None, None, None), token, ttl_ms]
        keys = [*self.keys.append_keys(job_id), key]
        began = time.perf_counter()
        reply, _, after_replies = await self._run_append(
            keys, args, before, after, None, script=self._start, shared=shared
        )
        self.metrics.append_took(time.perf_counter() - began)
        if reply[0] == "held":
            return None, False, after_replies
        if reply[0] == "taken":
            return None, True, after_replies
        started = await self._appended(job_id, EventType.STARTED, reply, None, None, None, after_replies, True)
        return started, True, after_replies

    def _args(
        self, event_type: EventType, data: msgspec.Struct | dict[str, Any] | None, attempt: int | None,
        key: str | None, at_ms: int | None, retention_s: int | None, incarnation: str | None, slot: str | None,
    ) -> list[str | int]:
        """append.lua's ARGV for one event."""
        payload = check_data(event_type, data if data is not None else {})
        args: list[str | int] = [
            event_type.value,
            "" if attempt is None else attempt,
            pack_data(event_type, payload),
            key or "",
            self.retention_s if retention_s is None else retention_s,
            "" if at_ms is None else at_ms,
            incarnation or "",
            slot or "",
        ]
        for field, value in fields_for(event_type, payload).items():
            args += [field, value]
        return args

    async def _appended(
        self, job_id: str, event_type: EventType, reply: Any, attempt: int | None, at_ms: int | None,
        replicas: int | None, after_replies: tuple[Any, ...], defer_feed: bool,
    ) -> Appended:
        """What append.lua's reply says, as an Appended; raises for a refusal."""
        if not isinstance(reply, str):  # a list: nothing was written
            status = reply[0]
            if status in ("replaced", "stale", "refused"):
                self._raise_refused(job_id, event_type, reply, attempt)
            if status == "duplicate":
                return Appended(id=reply[1], state=reply[2], cancel_requested=reply[3] == "1", duplicate=True,
                                replicas=replicas, after=after_replies)
            raise ValueError(f"the append script answered {reply!r:.200}")
        # 'ok <id> <state> <cancel> <attempt> <tenant> <kind>', one string (append.lua)
        _, event_id, state, cancel_requested, attempt_now, tenant, kind = reply.split(" ", 6)
        # The script stamps an event without an `at` with its entry id's milliseconds.
        at = at_ms if at_ms is not None else int(event_id.partition("-")[0])
        self.metrics.appended(kind, event_type.value, tenant or None)
        feed = None
        if self.activity.records(event_type):
            feed = FeedNote(job_id, kind, event_type, state, at, event_id, int(attempt_now), tenant)
            if not defer_feed:
                await self._record_activity(feed)
                feed = None
        return Appended(id=event_id, state=state, cancel_requested=cancel_requested == "1", at=at,
                        attempt=int(attempt_now), feed=feed, replicas=replicas, after=after_replies)

    async def append_many(
        self,
        job_id: str,
        reports: list[tuple[EventType, msgspec.Struct | dict[str, Any]]],
        *,
        attempt: int,
        keys: list[str],
        slot: str,
        incarnation: str | None = None,
        shared: SharedRun | None = None,
    ) -> Appended:
        """Append several reports of one attempt, in order, in one round trip (append_many.lua).

        Reports are events that change no state (progress, phase, log); each lands as its
        own entry, exactly as `append` would write it with the same key, and the hash ends
        as it would after appending them one by one. The batch lands whole or not at all,
        and `slot` remembers its last key, so a batch sent again after a lost reply is a
        duplicate. Raises as `append` does; the Appended is the last event's. With `shared`,
        the round trip is one shared with other callers', as `append`'s.
        """
        args: list[str | int] = [attempt, incarnation or "", slot, len(reports)]
        for (event_type, data), key in zip(reports, keys, strict=True):
            payload = check_data(event_type, data)
            fields = fields_for(event_type, payload)
            args += [event_type.value, pack_data(event_type, payload), key, len(fields)]
            for field, value in fields.items():
                args += [field, value]
        began = time.perf_counter()
        job_keys = list(self.keys.append_keys(job_id))
        reply, _, _ = await self._run_append(job_keys, args, None, None, None, script=self._append_many,
                                             shared=shared)
        self.metrics.append_took(time.perf_counter() - began)
        status = reply[0]
        if status in ("replaced", "stale", "refused"):
            self._raise_refused(job_id, reports[0][0], reply, attempt)
        if status == "duplicate":
            return Appended(id=reply[1], state=reply[2], cancel_requested=reply[3] == "1", duplicate=True)
        _, event_id, state, cancel_requested, kind, tenant = reply
        for event_type, count in collections.Counter(event_type for event_type, _ in reports).items():
            self.metrics.appended(kind, event_type.value, tenant or None, count)
        return Appended(id=event_id, state=state, cancel_requested=cancel_requested == "1", attempt=attempt)

    @staticmethod
    def _raise_refused(job_id: str, event_type: EventType, reply: list[str], attempt: int | None) -> NoReturn:
        """The error of a `replaced`, `stale` or `refused` reply of the append scripts."""
        status = reply[0]
        if status == "replaced":
            raise JobReplaced(job_id, event_type, reply[1])
        if status == "stale":
            raise AttemptSuperseded(job_id, event_type, reply[1], attempt or 0, int(reply[2]))
        state = reply[1]
        if state == ABSENT:
            raise JobNotFound(job_id)
        if event_type is EventType.SUBMITTED:
            raise JobExists(job_id)
        raise TransitionRefused(job_id, event_type, state)

    async def _run_append(
        self, keys: list[str], args: list[str | int], before: Callable[[Pipeline], object] | None,
        after: Callable[[Pipeline], object] | None, wait: ReplicaWait | None, script: AsyncScript | None = None,
        shared: SharedRun | None = None,
    ) -> tuple[Any, object, tuple[Any, ...]]:
        """The script's reply, WAIT's when `wait` is given (else None), and `after`'s; one round trip.

        WAIT counts the replicas that hold what its own connection wrote, so it must follow
        the append on that connection: a pipeline gives that. On a Cluster the pipeline
        sends the two to the node serving the job's slot; a WAIT error (that node was
        demoted under us) comes back as the reply, for ReplicaWait to count as none.
        """
        script = script or self._append
        if before is None and after is None and wait is None and shared is None:
            return await script(keys=keys, args=args), None, ()
        target: dict[str, Any] = {}
        if wait is not None and isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # a no-op once the slots are known
            target["target_nodes"] = self.redis.get_node_from_key(keys[0])
        # EVALSHA by hand: a registered script in a pipeline costs a SCRIPT EXISTS round trip
        # on every execute; a NOSCRIPT (a Redis that restarted) loads it and sends both again.
        ahead = 0  # commands of this caller's up to the script's, whose replies are not `after`'s

        def queue(pipe: Pipeline) -> None:
            nonlocal ahead
            start = len(pipe)
            if before is not None:
                before(pipe)
            # execute_command, not pipe.evalsha: redis-py's Cluster pipeline refuses the
            # method by name, yet routes the command by its keys (one job's: one slot).
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            ahead = len(pipe) - start
            if after is not None:
                after(pipe)
            if wait is not None:
                pipe.execute_command(*wait.command(), **target)

        for _ in range(2):
            if shared is not None and wait is None:
                # In a round trip with other callers' (app/batching.py); a WAIT needs its own.
                results = await shared(queue)
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    queue(pipe)
                    results = await pipe.execute(raise_on_error=False)
            wait_reply = results.pop() if wait is not None else None
            after_replies = tuple(results[ahead:])
            del results[ahead:]
            *queued, reply = results
            if isinstance(reply, NoScriptError):
                await self.redis.script_load(script.script)
                continue
            for result in (*queued, reply):
                if isinstance(result, Exception):
                    raise result
            return reply, wait_reply, after_replies
        raise NoScriptError("the append script vanished again right after it was loaded")

    async def _record_activity(self, note: FeedNote) -> None:
        try:
            await self.activity.record(note)
        except Exception as exc:  # derived and best-effort: the job's own stream already holds the event
            self.feed_failed(note, exc)

    @staticmethod
    def feed_failed(note: FeedNote, error: BaseException) -> None:
        """Log a feed entry that could not be written; never an error of the append."""
        log.warning("could not record %s of job %s in the activity feed", note.event_type.value, note.job_id,
                    exc_info=error)

    async def delete(self, job_id: str) -> bool:
        """Remove every key of a job (one round trip); False if it had none."""
        return bool(await self.redis.delete(*self.keys.all_job_keys(job_id)))

    # --- reading ---

    async def state(self, job_id: str) -> JobState:
        """The job's current state (one round trip: HGETALL and PEXPIRETIME). Raises JobNotFound."""
        return (await self.state_and_incarnation(job_id))[0]

    async def state_and_incarnation(self, job_id: str) -> tuple[JobState, str | None]:
        """The job's state and its incarnation, the id of its `submitted` event (one round trip).

        A writer that passes the incarnation to `append` can never write into a job that
        replaced the one it loaded. None for a hash written before incarnations were recorded.
        Raises JobNotFound.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_state(pipe, job_id)
            replies = await pipe.execute()
        return self.state_from(job_id, replies)

    def queue_state(self, pipe: Pipeline, job_id: str) -> None:
        """`state_and_incarnation`'s reads (two commands), queued on a pipeline of the caller's."""
        pipe.hgetall(self.keys.job(job_id))
        pipe.pexpiretime(self.keys.job(job_id))

    @staticmethod
    def state_from(job_id: str, replies: list[Any]) -> tuple[JobState, str | None]:
        """The job's state and incarnation from the two replies of `queue_state`; raises JobNotFound."""
        fields, expires_ms = replies
        if not fields.get("state"):
            raise JobNotFound(job_id)
        return JobState.from_hash(job_id, fields, expires_ms), fields.get("incarnation")

    async def visible_state(
        self, job_id: str, tenant: str | None, *, sees_all: bool = False, shared: SharedRun | None = None
    ) -> JobState:
        """The job's state if a viewer of `tenant` may see it; else JobNotFound, as for a missing job.

        The rule of the API and of handlers reading other jobs alike: a viewer sees the
        jobs of its own tenant, and one that `sees_all` (an admin, or open mode) sees
        every job. One EVALSHA (visible.lua), which checks the owner inside Redis: another
        tenant's job comes back as the same empty reply as a missing one, and goes through
        the same code here, so not even the time taken tells them apart.
        """
        keys, args = [self.keys.job(job_id)], [tenant or "", "1" if sees_all else "0"]
        reply: Any = None
        if shared is not None:  # in a round trip with other readers' (app/batching.py)
            (reply,) = await shared(lambda pipe: pipe.execute_command("EVALSHA", self._visible.sha, 1, *keys, *args))
            if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                raise reply
        if shared is None or isinstance(reply, NoScriptError):
            reply = await self._visible(keys=keys, args=args)  # loads the script when Redis lost it
        fields = dict(zip(reply[1::2], reply[2::2], strict=True))
        if not fields.get("state"):
            raise JobNotFound(job_id)
        return JobState.from_hash(job_id, fields, reply[0])

    async def history_page(self, job_id: str, after: str = BEGINNING, limit: int = 100) -> list[Event]:
        """Up to `limit` events after entry id `after`, oldest first; JobNotFound if no such job (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.job(job_id))
            pipe.xrange(self.keys.events(job_id), min=f"({after}", max="+", count=limit)
            exists, entries = await pipe.execute()
        if not exists:
            raise JobNotFound(job_id)
        return decode_events(entries)

    async def events(self, job_id: str, after: str = BEGINNING, page_size: int = 500) -> AsyncIterator[Event]:
        """Every event after `after`, paging through the stream (one XRANGE per page).

        A corrupt entry raises CorruptEvent; `readable` steps over it instead.
        """
        async for item in self.readable(job_id, after, page_size):
            if isinstance(item, Unreadable):
                raise item.error
            yield item

    async def readable(
        self, job_id: str, after: str = BEGINNING, page_size: int = 500
    ) -> AsyncIterator[Event | Unreadable]:
        """Like `events`, but an entry that is no event comes as Unreadable and the walk goes on."""
        async for page in self.readable_pages(job_id, after, page_size):
            for item in page:
                yield item

    def readable_pages(
        self, job_id: str, after: str = BEGINNING, page_size: int = 500, until: str = "+"
    ) -> AsyncIterator[list[Event | Unreadable]]:
        """`readable` a page at a time (one XRANGE each) up to id `until`, for a reader that writes pages whole."""
        return self.decoded_pages(job_id, readable_raw_entries, after=after, page_size=page_size, until=until)

    def decoded_pages(
        self, job_id: str, decode: Callable[[list[RawEntry]], T], *, after: str, page_size: int, until: str = "+"
    ) -> AsyncIterator[T]:
        """The job's entries after `after` up to `until` a page at a time, each as `decode` makes it of raw entries.

        Each page read ahead of the reader, and parsed by hiredis alone (app/replay_pages.py).
        """
        return raw_pages(self.redis, self.keys.events(job_id), decode, after=after, page_size=page_size, until=until)

    async def max_deleted_id(self, job_id: str) -> str:
        """The newest entry id the job's stream may have lost, `0-0` if none (one XINFO).

        XDEL records its deletions exactly in max-deleted-entry-id; XTRIM does not
        (Redis 7.0), so when nothing is recorded a stream that no longer starts with
        `submitted` counts as having lost everything before its first entry.
        """
        return deleted_through(await self.redis.xinfo_stream(self.keys.events(job_id)))

    # --- repair ---

    async def rebuild(self, job_id: str, *, dry_run: bool = False) -> tuple[dict[str, str], dict[str, str]]:
        """Recompute a job's hash from its stream; returns (hash before, hash after).

        With dry_run the hash is only compared, not written. The rewrite keeps the
        stream's TTL, so a repaired terminal job still expires with the rest of it. The
        fields that remember idempotency keys are no part of the state and are kept as they
        are (a stream entry holds its key, not the writer's slot that remembered it).
        """
        job_key, events_key, _ = self.keys.job_keys(job_id)
        stored = await self.redis.hgetall(job_key)
        before = state_fields(stored)
        rebuilt = fold([event async for event in self.events(job_id)])
        if not rebuilt and not before:
            raise JobNotFound(job_id)
        if dry_run or rebuilt == before:
            return before, rebuilt
        ttl_ms = await self.redis.pttl(events_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(job_key)
            if rebuilt:
                pipe.hset(job_key, mapping={**rebuilt, **dedupe_fields(stored)})
                if ttl_ms > 0:
                    pipe.pexpire(job_key, ttl_ms)
            await pipe.execute()
        return before, rebuilt


def decode_events(entries: Iterable[tuple[str, dict[str, str]]]) -> list[Event]:
    return [Event.from_entry(entry_id, fields) for entry_id, fields in entries]


def readable_entries(entries: Iterable[tuple[str, dict[str, str]]]) -> list[Event | Unreadable]:
    """`decode_events`, but an entry that is no event comes as Unreadable (a replay steps over it)."""
    return [_readable(entry_id, fields) for entry_id, fields in entries]


def readable_raw_entries(entries: list[RawEntry]) -> list[Event | Unreadable]:
    """`readable_entries` of entries as XRANGE's raw reply holds them (app/replay_pages.py)."""
    return [_readable(entry_id, entry_fields(fields)) for entry_id, fields in entries]


def deleted_through(info: dict[str, Any]) -> str:
    """EventLog.max_deleted_id's answer from a stream's XINFO STREAM fields (first-entry as (id, fields))."""
    deleted = info.get("max-deleted-entry-id") or BEGINNING
    if deleted != BEGINNING:
        return str(deleted)
    first = info.get("first-entry")
    if not first:
        return str(info.get("last-generated-id") or BEGINNING)
    if entry_type(first[1]) != EventType.SUBMITTED:
        return previous_id(first[0])
    return BEGINNING


def _readable(entry_id: str, fields: dict[str, str]) -> Event | Unreadable:
    try:
        return Event.from_entry(entry_id, fields)
    except CorruptEvent as exc:
        return Unreadable(entry_id, exc)

"""Runs one job: started, the kind's handler, then succeeded, retrying or failed.

A taskiq message is acknowledged only when `run` returns, which is after the job's
terminal event is written, so a killed worker's job is run again (queued again by the
reaper, workers/reaper.py, since the broker would wait for its idle timeout). Retries
happen inside one delivery (the backoff is a sleep). A lease (app/lease.py) keeps two
deliveries of one job from running it at once. A draining worker interrupts its jobs
(`interrupt`): each ends its attempt as `Stalled` and is queued again for the next
worker, so its own message can be acknowledged.

A delivery runs the incarnation of the job it first loads (the id of its `submitted`
event) and names it in every append: a job deleted and submitted again under the same
id is another job, which this delivery leaves alone; its own message runs it.

Round trips of a trivial job here: one takes the lease, starts the attempt and reads the
job (start.lua: append.lua's `started` behind the lease's SET NX, in one call, after the
live set's ZADD), and one appends the outcome with the lease's release behind it
(lease.lua's `finish`: only once the job is finished). What follows from the outcome goes
to the trailer (workers/trailer.py), which sends it for every delivery of the worker
within a few ms in one pipeline, and which the delivery does not wait for: the activity
feed's entries (`started`'s rides along, unless the handler runs longer than
`progress_interval_s`) and the live set's ZREM. Two and a share, where they were nine.
And each is shared: the runner's round trips go through one SharedPipeline
(app/batching.py) with one round trip in flight, so the starts, outcomes and trailer
writes of a busy worker's deliveries (and, while jobs run, the broker's next read) that
come while one is out go together in the next. An idle worker's lone job sends its
own at once, as before; a busy one pays a fraction of a round trip per job.
A job that is running (its worker died) or asked to cancel is only leased by the first
round trip, and goes on as before: stalled, or cancelled, then a `started` of its own.

Redis away (down, frozen, read-only, full) costs no attempt: every load and append here,
and every report of the handler, waits it out for up to `redis_outage_s`
(app/patience.py), and each append it may retry carries an idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from jobtrail.activity import FeedNote
from jobtrail.artifacts import ArtifactStore
from jobtrail.batching import SharedPipeline
from jobtrail.config import Settings
from jobtrail.errors import JobNotFound, JobReplaced, TransitionRefused, UnknownKind
from jobtrail.eventlog import Appended, EventLog
from jobtrail.events import (
    TERMINAL_STATES,
    ErrorInfo,
    EventType,
    FailedData,
    ReasonData,
    RetryingData,
    StartedData,
    State,
    SucceededData,
)
from jobtrail.jobstate import JobState
from jobtrail.lease import Lease
from jobtrail.livejobs import LiveJobs, now_ms
from jobtrail.metrics import Outcome, id_ms
from jobtrail.patience import Patience
from jobtrail.registry import find_kind, get_kind, parse_params
from jobtrail.workers.context import AttemptLost, JobCancelled, JobContext, PermanentFailure
from jobtrail.workers.trailer import Trailer
from jobtrail.workers.wire import Wire

log = logging.getLogger(__name__)

STALLED = ErrorInfo(type="Stalled", message="the worker running this attempt stopped before it finished")
SHUT_DOWN = ErrorInfo(type="Stalled", message="the worker running this attempt was shut down before it finished")

Requeue = Callable[[str], Awaitable[None]]

# Round trips of the deliveries' shared pipeline out at once; callers meanwhile wait for the next one.
SHARED_IN_FLIGHT = 1
# Loop turns the next of them waits once one comes back, for the callers its replies woke to queue
# theirs (app/batching.py): a busy worker's round trips per job 1.4 -> 0.8 in `bench floor`'s drain.
SHARED_LINGER_TURNS = 4

# The longest a delivery's feed entry waits for its next round trip to ride along (see _hold_feed).
FEED_HOLD_S = 0.1

_OUTCOMES: dict[EventType, Outcome] = {
    EventType.SUCCEEDED: "succeeded", EventType.FAILED: "failed", EventType.CANCELLED: "cancelled"
}


def error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(type=type(exc).__name__, message=str(exc)[:2000] or type(exc).__name__)


class Delivery:
    """One delivery of a job: its lease, and the incarnation it runs (fixed by its first load)."""

    __slots__ = (
        "feed", "feed_timer", "incarnation", "job_id", "kind", "lease", "loaded", "started_ms",
        "tenant",
    )

    def __init__(self, job_id: str, lease: Lease) -> None:
        self.job_id = job_id
        self.lease = lease
        self.incarnation: str | None = None
        self.loaded = False
        # What the metrics are labelled with, and when (Redis's clock) the running attempt started.
        self.kind = ""
        self.tenant: str | None = None
        self.started_ms: int | None = None
        # Feed entries of its appends not written yet, and the timer that writes them if
        # no later round trip of the delivery takes them along first (Runner._hold_feed).
        self.feed: list[FeedNote] = []
        self.feed_timer: asyncio.TimerHandle | None = None


class Runner:
    def __init__(
        self, events: EventLog, settings: Settings, name: str | None = None, *, requeue: Requeue | None = None
    ) -> None:
        self.events = events
        self.settings = settings
        self.artifacts = ArtifactStore(settings.artifact_dir)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.live = LiveJobs(events.redis, events.keys, settings.pending_stale_s)
        # The deliveries' round trips (take, start, load, outcome, the trailer's writes), shared,
        # on one connection held while they follow one another (workers/wire.py).
        self.shared = SharedPipeline(
            Wire(events.redis), in_flight=SHARED_IN_FLIGHT, linger_turns=SHARED_LINGER_TURNS
        )
        self.trailer = Trailer(events, self.live, shared=self.shared.run)
        self.patience = Patience(settings.redis_outage_s)
        self.metrics = events.metrics
        # Queues a job handed off by `interrupt` for the next worker; without it the reaper does.
        self.requeue = requeue
        # The tasks inside `run`: taskiq acknowledges a message in the same task once `run`
        # returns, so a draining worker waits for these rather than for the jobs alone.
        self.deliveries: set[asyncio.Task[Any]] = set()
        # By lease token: two deliveries of one id (two incarnations) may run here at once.
        self._running: dict[str, asyncio.Task[None]] = {}

    def backoff_s(self, attempt: int) -> float:
        """Delay before the attempt after `attempt`: exponential, capped."""
        return min(self.settings.retry_base_s * 2 ** (attempt - 1), self.settings.retry_max_s)

    async def run(self, job_id: str) -> None:
        """Run the job until it is terminal (or gone); drop the delivery if another worker holds it."""
        delivery = asyncio.current_task()
        assert delivery is not None  # taskiq runs each delivery in a task of its own
        self.deliveries.add(delivery)
        try:
            await self._run(job_id)
        finally:
            self.deliveries.discard(delivery)

    def interrupt(self) -> None:
        """Stop every job this runner holds; each is handed to the next worker as its delivery ends."""
        for body in self._running.values():
            body.cancel()

    async def _run(self, job_id: str) -> None:
        keys = self.events.keys
        lease = Lease(
            self.events.redis, keys.lease(job_id), self.name, self.settings.lease_ttl_s, job_key=keys.job(job_id)
        )
        delivery = Delivery(job_id, lease)
        taken, loaded, started = await self.patience.run(
            f"job {job_id}: taking its lease", lambda: self._take(delivery)
        )
        if not taken:
            log.info("job %s is being run by another worker; dropping this delivery", job_id)
            return
        handed_off = False
        async with lease.kept_alive():
            # A task of its own, so `interrupt` can stop the job and still let this delivery end cleanly.
            body = asyncio.create_task(self._run_leased(delivery, loaded, started))
            self._running[lease.token] = body
            try:
                await body
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not body.cancelled() or (current is not None and current.cancelling()):
                    raise
                handed_off = await self._hand_off(delivery)
            finally:
                del self._running[lease.token]
        self._settle_feed(delivery)
        # Only now, with the lease released: a delivery that found it held would drop itself.
        if handed_off and self.requeue is not None:
            try:
                await self.requeue(job_id)
            except RedisError as exc:
                log.warning("job %s: could not queue it again (%s); the reaper will", job_id, exc)

    async def _take(self, delivery: Delivery) -> tuple[bool, list[Any] | None, Appended | None]:
        """Take the lease, start the job's next attempt if it waits for one, and read the job: one round trip.

        Whether the lease was taken, the job as read after it (for `_accept`; None if it
        must be read again), and the `started` appended, if any (EventLog.start). The
        live set's ZADD goes first: the reaper's first look at the job comes when this
        lease could first expire. Read even when the lease is held elsewhere: a wasted
        read is cheaper than a round trip.
        """
        job_id, lease = delivery.job_id, delivery.lease

        def postpone(pipe: Pipeline) -> None:
            self.live.queue_postpone(pipe, {job_id: now_ms() + lease.ttl_ms})

        def read(pipe: Pipeline) -> None:
            self.events.queue_state(pipe, job_id)

        try:
            started, taken, loaded = await self.events.start(
                job_id, StartedData(worker=self.name, attempt=1), lease=(lease.key, lease.token, lease.ttl_ms),
                before=postpone, after=read, shared=self.shared.run,
            )
        except (TransitionRefused, JobNotFound):  # taken, and changed under the script: read it again
            return True, None, None
        return taken, list(loaded), started

    async def _run_leased(self, delivery: Delivery, loaded: list[Any] | None, started: Appended | None) -> None:
        lease = delivery.lease
        job = self._accept(delivery, loaded) if loaded is not None else await self._load(delivery)
        if job is None:
            return
        lease.hold(job.attempt, delivery.incarnation)
        delivery.kind, delivery.tenant = job.kind, job.tenant
        if started is not None:
            job = await self._begun(delivery, job, job.attempt, started)
        elif job.state is State.RUNNING:
            # Running, yet nobody held its lease: the worker that ran it died.
            if job.started_at is not None:
                delivery.started_ms = round(job.started_at.timestamp() * 1000)
            job = await self._end_attempt(delivery, job, job.attempt, STALLED)
        while job is not None and job.state is State.PENDING and not lease.lost:
            if job.cancel_requested:
                reason = ReasonData(reason="cancelled before start")
                await self._final(delivery, EventType.CANCELLED, reason, job.attempt)
                return
            job = await self._attempt(delivery, job)

    async def _hand_off(self, delivery: Delivery) -> bool:
        """End an interrupted attempt as stalled with no delay; True when the job should be queued again."""
        job_id = delivery.job_id
        try:
            job = await self._load(delivery)
            if job is not None and job.state is State.RUNNING:
                job = await self._end_attempt(delivery, job, job.attempt, SHUT_DOWN, delay_s=0.0)
        except RedisError as exc:
            log.warning("job %s: could not hand it off (%s); the reaper will", job_id, exc)
            return False
        if job is not None:
            log.info("job %s handed off for another worker to run attempt %d", job_id, job.attempt + 1)
        return job is not None

    async def _attempt(self, delivery: Delivery, job: JobState) -> JobState | None:
        """One attempt; the job's state afterwards when another attempt should follow."""
        attempt = job.attempt + 1
        started_data = StartedData(worker=self.name, attempt=attempt)

        def postpone(pipe: Pipeline) -> None:
            # The reaper's first look at the job comes when this lease could first expire.
            self.live.queue_postpone(pipe, {job.id: now_ms() + delivery.lease.ttl_ms})

        try:
            started = await self.patience.run(f"job {job.id}: started", lambda: self.events.append(
                job.id, EventType.STARTED, started_data, attempt=attempt, key=f"started:{attempt}",
                incarnation=delivery.incarnation, before=postpone, defer_feed=True, shared=self.shared.run,
            ))
        except JobReplaced as exc:
            log.info("%s; dropping this delivery", exc)
            return None
        return await self._begun(delivery, job, attempt, started)

    async def _begun(self, delivery: Delivery, job: JobState, attempt: int, started: Appended) -> JobState | None:
        """The attempt that `started` began: its handler, then its outcome; the job's state when another follows."""
        if started.duplicate:
            log.info("job %s attempt %d was already started elsewhere; dropping this delivery", job.id, attempt)
            return None
        self._hold_feed(delivery, started.feed)
        delivery.lease.hold(attempt, delivery.incarnation)
        delivery.started_ms = id_ms(started.id)
        if attempt == 1 and job.created_at is not None:
            self.metrics.first_started(job.kind, job.tenant, round(job.created_at.timestamp() * 1000), started.id)
        ctx = JobContext(
            self.events, job.id, attempt, min_interval_s=self.settings.progress_interval_s, lease=delivery.lease,
            artifacts=self.artifacts, tenant=job.tenant, kind=find_kind(job.kind), incarnation=delivery.incarnation,
            patience=self.patience, batched=True, shared=self.shared.run,
        )
        try:
            spec = get_kind(job.kind)
            try:
                result = await spec.handler(parse_params(job.kind, job.params), ctx)
            finally:
                await ctx.close()  # before the outcome, so no held progress lands after it
            outcome = SucceededData(result=msgspec.to_builtins(result), artifact=ctx.produced)
        except JobCancelled as exc:
            await self._final(delivery, EventType.CANCELLED, ReasonData(reason=str(exc)), attempt)
            return None
        except AttemptLost as exc:
            log.warning("job %s attempt %d abandoned: %s", job.id, attempt, exc)
            return None
        except (PermanentFailure, UnknownKind) as exc:  # no retry brings a handler this worker lacks
            log.warning("job %s failed permanently: %s", job.id, exc, exc_info=True)
            await self._final(delivery, EventType.FAILED, FailedData(error=error_info(exc)), attempt)
            return None
        except Exception as exc:
            log.warning("job %s attempt %d failed: %s", job.id, attempt, exc, exc_info=True)
            return await self._end_attempt(delivery, job, attempt, error_info(exc))
        await self._final(delivery, EventType.SUCCEEDED, outcome, attempt)
        return None

    async def _end_attempt(
        self, delivery: Delivery, job: JobState, attempt: int, error: ErrorInfo, delay_s: float | None = None
    ) -> JobState | None:
        """Retry after a delay (the backoff by default) if attempts remain, else fail the job."""
        if attempt >= job.max_attempts:
            await self._final(delivery, EventType.FAILED, FailedData(error=error), attempt)
            return None
        delay = self.backoff_s(attempt) if delay_s is None else delay_s
        retrying = RetryingData(error=error, delay_s=delay, next_attempt=attempt + 1)
        try:
            appended = await self._durable_append(
                delivery, EventType.RETRYING, retrying, attempt, key=f"retrying:{attempt}"
            )
        except (TransitionRefused, JobNotFound):
            return None  # cancelled, deleted or replaced meanwhile
        await self._write_after(delivery, appended.feed)
        self._measure_attempt(delivery, "retried", appended)
        self.metrics.retried(delivery.kind, delivery.tenant, error.type)
        await asyncio.sleep(delay)
        return await self._load(delivery)

    async def _final(self, delivery: Delivery, event_type: EventType, data: Any, attempt: int) -> None:
        job_id = delivery.job_id
        try:
            appended = await self._durable_append(
                delivery, event_type, data, attempt, key=event_type.value, after=delivery.lease.queue_finish
            )
        except (TransitionRefused, JobNotFound) as exc:
            log.info("job %s: %s not written: %s", job_id, event_type, exc)
            if isinstance(exc, JobReplaced):
                return  # the job under this id now is another one, with a delivery of its own
            if isinstance(exc, TransitionRefused) and exc.state not in TERMINAL_STATES:
                return  # another worker took the job over; it stays live
            await self._write_after(delivery, None, finished=True)
        else:
            self._measure_attempt(delivery, _OUTCOMES[event_type], appended)
            delivery.lease.settle_finish(appended.after[0] if appended.after else None)
            await self._write_after(delivery, appended.feed, finished=True)

    def _hold_feed(self, delivery: Delivery, note: FeedNote | None) -> None:
        """Keep a feed entry for the delivery's next round trip; written alone if none comes soon.

        Soon is `progress_interval_s`, the delay a report may wait anyway, and never less
        than FEED_HOLD_S (a deployment that turns coalescing off still wants a trivial job's
        entries in one round trip): a trivial job's outcome comes first and takes it along,
        a long job's feed is not held back. A timer, not a task: a trivial job's outcome
        cancels it at once, and a task made and cancelled per job cost more than its write.
        """
        if note is None:
            return
        delivery.feed.append(note)
        if delivery.feed_timer is None:
            delivery.feed_timer = asyncio.get_running_loop().call_later(
                max(self.settings.progress_interval_s, FEED_HOLD_S), self._settle_feed, delivery
            )

    def _settle_feed(self, delivery: Delivery) -> None:
        """Hand the feed entries still held to the trailer now (the hold's end, or the delivery's)."""
        notes = self._take_feed(delivery, None)
        if notes:
            self.trailer.write(notes)

    def _take_feed(self, delivery: Delivery, note: FeedNote | None) -> list[FeedNote]:
        """The held feed entries and `note`'s, no longer held."""
        if delivery.feed_timer is not None:
            delivery.feed_timer.cancel()
            delivery.feed_timer = None
        notes, delivery.feed = [*delivery.feed, *([note] if note is not None else [])], []
        return notes

    async def _write_after(self, delivery: Delivery, note: FeedNote | None, *, finished: bool = False) -> None:
        """What follows an append: the held feed entries and `note`'s, and when the job `finished`,
        the lease's release unless the outcome's round trip did it, and the live set's ZREM.
        The feed and the live set are queued on the trailer. Best-effort, like all derived writes.
        """
        notes = self._take_feed(delivery, note)
        lease = delivery.lease
        if finished and not lease.released:
            try:
                await lease.release()
                lease.released = True
            except RedisError as exc:
                lease.release_failed(exc)
        if notes or finished:
            self.trailer.write(notes, delivery.job_id if finished else None)

    def _measure_attempt(self, delivery: Delivery, outcome: Outcome, ended: Appended) -> None:
        """Observe the running attempt's duration, once.

        A duplicate `ended` counts too: the lease makes this delivery the only writer of
        its outcome, so a duplicate is its own write whose reply was lost and sent again.
        """
        started_ms, delivery.started_ms = delivery.started_ms, None
        if started_ms is not None:
            self.metrics.attempt_ended(delivery.kind, delivery.tenant, outcome, started_ms, ended.id)

    async def _durable_append(
        self, delivery: Delivery, event_type: EventType, data: Any, attempt: int, key: str,
        after: Callable[[Pipeline], object] | None = None,
    ) -> Appended:
        """Append, waiting Redis out (up to `redis_outage_s`); the key makes a retried append land once.

        When Redis stays away longer, the error is raised. taskiq acknowledges the message
        all the same, so the job is left to the reaper: running, and soon without a lease.
        Its feed entry comes back in `Appended.feed`, for `_write_after`.
        """
        job_id = delivery.job_id
        return await self.patience.run(f"job {job_id}: {event_type.value} append", lambda: self.events.append(
            job_id, event_type, data, attempt=attempt, key=key, incarnation=delivery.incarnation, after=after,
            defer_feed=True, shared=self.shared.run,
        ))

    async def _load(self, delivery: Delivery) -> JobState | None:
        """The job if it is still live and still the incarnation this delivery runs (one HGETALL)."""
        job_id = delivery.job_id

        async def read() -> list[Any]:
            replies = await self.shared.run(lambda pipe: self.events.queue_state(pipe, job_id))
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies

        return self._accept(delivery, await self.patience.run(f"job {job_id}: loading it", read))

    def _accept(self, delivery: Delivery, replies: list[Any]) -> JobState | None:
        """The job `replies` hold (of EventLog.queue_state), if still live and the incarnation this delivery runs."""
        job_id = delivery.job_id
        try:
            job, incarnation = self.events.state_from(job_id, replies)
        except JobNotFound:
            log.info("job %s no longer exists; nothing to run", job_id)
            return None
        if not delivery.loaded:
            delivery.incarnation, delivery.loaded = incarnation, True
        elif incarnation != delivery.incarnation:
            log.info("job %s was deleted and submitted again; its new incarnation has a delivery of its own", job_id)
            return None
        return None if job.terminal else job

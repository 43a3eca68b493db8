"""The context a job handler reports through: progress, phase, log, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from jobtrail.artifacts import ArtifactStore
from jobtrail.errors import JobNotFound, JobReplaced, TransitionRefused
from jobtrail.eventlog import Appended, EventLog, SharedRun
from jobtrail.events import TERMINAL_STATES, Artifact, Event, EventType, LogData, PhaseData, ProgressData, State
from jobtrail.jobstate import JobState
from jobtrail.lease import Lease
from jobtrail.patience import Patience

if TYPE_CHECKING:
    from jobtrail.registry import Kind

T = TypeVar("T")


class JobCancelled(Exception):
    """Raised inside a handler when its job was cancelled (or deleted): stop working."""


class AttemptLost(Exception):
    """Raised inside a handler whose attempt is no longer the job's: stop, write nothing.

    Another worker took the attempt over, or the job was deleted and a new one submitted
    under its id (same Idempotency-Key).
    """


class PermanentFailure(Exception):
    """Raise from a handler to fail the job at once, without the remaining attempts."""


class UnknownPhase(PermanentFailure):
    """A phase the job's kind did not declare: a bug in the handler, which no retry would fix."""

    def __init__(self, kind: str, phase: str, phases: tuple[str, ...]) -> None:
        super().__init__(f"phase {phase!r} is not one of kind {kind!r}'s phases: {', '.join(phases)}")
        self.kind = kind
        self.phase = phase
        self.phases = phases


# The reports a batched context sends together (append_many.lua): those that change no state.
BATCHED_TYPES = frozenset({EventType.PROGRESS, EventType.PHASE, EventType.LOG})
MAX_BATCH = 50  # reports per round trip
MAX_QUEUED = 500  # reports waiting before a report waits for them
# A handler reporting in a tight loop lets the loop run (its sender, the other jobs) at
# least this often. Not at every report: a turn of the loop per report was a tenth of a
# worker's CPU in W1 (issue 10), and what the sender takes meanwhile joins its next batch.
YIELD_EVERY_S = 0.001


class JobContext:
    """Handed to a handler for one attempt of one job.

    Progress is coalesced to one event per `min_interval_s`; a phase change and
    completion (1.0) are always written, and the last report held back is written
    when the interval ends, so a handler that goes quiet does not leave a stale figure.
    Every write also reports whether the job was asked to cancel, so a handler learns
    of it at its next progress call. The runner calls `close` when the attempt ends.

    A handler that reads other jobs does it through `job` and `history`, which see them
    as the job's submitter would through the API: `tenant` is the job's own (None for an
    admin's job, or in open mode, which see every job), and another tenant's job is
    JobNotFound, exactly like a missing one. `events` is for the context's own writes.

    Every write names the attempt and the job's `incarnation` (the id of its `submitted`
    event, as the runner loaded it), so a worker that lost its attempt, or whose job was
    deleted and submitted again, writes nothing into the job that now has the id.

    With `patience`, a report waits Redis out (down, frozen, read-only, full) instead of
    raising into the handler, which would fail the attempt; each write carries an
    idempotency key of its own (`c<attempt>.<writer>.<n>`), so one retried after a timeout that
    hid its success lands once.

    `batched` (the runner's contexts) lets a handler report faster than one round trip:
    a report is queued and the call returns; one write is in flight at a time, and the
    reports queued meanwhile go out together in the next one (EventLog.append_many: each
    its own event, in order). A failure of a write (cancelled, attempt lost) raises at the
    handler's next report, or from `close`, which waits for every queued report to land.
    """

    def __init__(
        self,
        events: EventLog,
        job_id: str,
        attempt: int,
        *,
        min_interval_s: float,
        lease: Lease | None = None,
        artifacts: ArtifactStore | None = None,
        tenant: str | None = None,
        kind: Kind | None = None,
        incarnation: str | None = None,
        patience: Patience | None = None,
        batched: bool = False,
        shared: SharedRun | None = None,
    ) -> None:
        self.events = events
        # The runner's shared round trips (workers/runner.py): concurrent jobs' reports go out together.
        self.shared = shared
        self.tenant = tenant
        self.kind = kind  # its phases, when it declares them, are the only ones accepted
        self.lease = lease
        self.artifacts = artifacts
        self.produced: Artifact | None = None
        self.job_id = job_id
        self.attempt = attempt
        self.incarnation = incarnation
        self.patience = patience
        self._writes = 0  # numbers each write's idempotency key
        # And this context's own token: two deliveries of one attempt (a taskiq redelivery
        # carries on with the same attempt) must not take each other's writes for repeats.
        self._writer = os.urandom(4).hex()  # as uuid4's first 8 hex digits, without the UUID object
        self.min_interval_s = min_interval_s
        self.cancel_requested = False
        self._last_write = float("-inf")
        self._phase: str | None = None
        self._held: ProgressData | None = None
        self._flusher: asyncio.Task[None] | None = None
        # Writes in order: a held report must not land after a newer one.
        self._writing = asyncio.Lock()
        self.batched = batched
        self._queued: list[tuple[EventType, Any]] = []
        self._sender: asyncio.Task[None] | None = None
        self._yielded_at = float("-inf")
        self._failure: BaseException | None = None  # of a batched write, raised at the next report

    def sees(self, tenant: str | None) -> bool:
        """Whether this job's submitter may see a job of `tenant`."""
        return self.tenant is None or tenant == self.tenant

    async def job(self, job_id: str) -> JobState:
        """Another job's state, as this job's submitter may see it; JobNotFound otherwise (one round trip)."""
        return await self.events.visible_state(job_id, self.tenant, sees_all=self.tenant is None)

    async def history(self, job_id: str, page_size: int = 500) -> AsyncIterator[Event]:
        """Another job's events, oldest first, if this job's submitter may see it; JobNotFound otherwise.

        One round trip to check, then one XRANGE per page.
        """
        await self.job(job_id)
        async for event in self.events.events(job_id, page_size=page_size):
            yield event

    async def progress(
        self,
        fraction: float,
        message: str | None = None,
        phase: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress (0..1). Raises JobCancelled if the job was cancelled, UnknownPhase for a bad phase."""
        self._check_phase(phase)
        fraction = min(max(float(fraction), 0.0), 1.0)
        phase_changed = phase is not None and phase != self._phase
        now = time.monotonic()
        data = ProgressData(progress=fraction, current=current, total=total, message=message, phase=phase)
        if not (phase_changed or fraction >= 1.0 or now - self._last_write >= self.min_interval_s):
            self._held = data
            if self._flusher is None:
                delay = self._last_write + self.min_interval_s - now
                self._flusher = asyncio.create_task(self._flush_after(delay))
            self._raise_if_cancelled()
            return
        if phase is not None:
            self._phase = phase
        self._held = None
        await self._write(EventType.PROGRESS, data)
        self._last_write = now

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        held, self._held = self._held, None
        if held is None:
            return
        try:
            await self._write(EventType.PROGRESS, held)
            self._last_write = time.monotonic()
        except Exception:  # noqa: S110 - the handler meets the same cause at its next write
            pass

    async def close(self) -> None:
        """End the attempt's reporting: a held report is dropped (the outcome event follows).

        Reports already queued (`batched`) are written first; a failure of theirs raises here.
        """
        self._held = None
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._sender is not None:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # interrupted: nothing more to wait for
                self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None
        self._raise_failure()

    async def phase(self, name: str, message: str | None = None) -> None:
        """Enter a named phase (always written); UnknownPhase if the kind does not declare it."""
        self._check_phase(name)
        self._phase = name
        await self._write(EventType.PHASE, PhaseData(phase=name, message=message))

    async def log(self, message: str, level: str = "info") -> None:
        """Add a log line to the job's history."""
        await self._write(EventType.LOG, LogData(level=level, message=message))

    @contextlib.contextmanager
    def artifact(self, name: str, content_type: str) -> Iterator[BinaryIO]:
        """Write the job's artifact file; it appears under `name` only if the block completes.

        The runner records it (name, size, SHA-256, type) in the `succeeded` event.
        """
        if self.artifacts is None:
            raise RuntimeError("this context has no artifact store")
        with self.artifacts.writer(self.job_id, name, content_type) as (file, out):
            yield file  # type: ignore[misc]
        self.produced = out[0]

    async def check_cancelled(self) -> None:
        """Ask Redis now (one HMGET) and raise JobCancelled (or AttemptLost) if the job should stop."""
        def ask() -> Any:
            return self.events.redis.hmget(self.events.keys.job(self.job_id), "cancel_requested", "incarnation")

        flag, incarnation = await self._patiently("checking for cancellation", ask)
        if flag is None:
            raise JobCancelled(f"job {self.job_id} no longer exists")
        if self.incarnation is not None and incarnation is not None and incarnation != self.incarnation:
            raise AttemptLost(f"job {self.job_id} was deleted and submitted again")
        self.cancel_requested = flag == "1"
        self._raise_if_cancelled()

    def _check_phase(self, phase: str | None) -> None:
        if phase is None or self.kind is None or self.kind.phases is None:
            return
        if phase not in self.kind.phases:
            raise UnknownPhase(self.kind.name, phase, self.kind.phases)

    def _raise_if_cancelled(self) -> None:
        if self.lease is not None and self.lease.lost:
            raise AttemptLost(f"job {self.job_id}: this worker's lease expired")
        if self.cancel_requested:
            raise JobCancelled(f"job {self.job_id} was asked to cancel")

    async def _write(self, event_type: EventType, data: Any) -> Appended:
        if self.batched and event_type in BATCHED_TYPES:
            return await self._queue(event_type, data)
        async with self._writing:
            return await self._send([(event_type, data)])

    async def _queue(self, event_type: EventType, data: Any) -> Appended:
        """Queue a report for the sender; waits only when MAX_QUEUED are queued already."""
        self._raise_failure()
        self._queued.append((event_type, data))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())
        if len(self._queued) >= MAX_QUEUED:
            await asyncio.gather(self._sender, return_exceptions=True)
        elif (now := time.monotonic()) - self._yielded_at >= YIELD_EVERY_S:
            self._yielded_at = now
            await asyncio.sleep(0)
        self._raise_failure()
        self._raise_if_cancelled()
        return Appended(id="", state=State.RUNNING, cancel_requested=self.cancel_requested)

    async def _send_queued(self) -> None:
        while self._queued and self._failure is None:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            try:
                await self._send(batch)
            except Exception as exc:  # the handler's next report (or `close`) raises it
                self._failure = exc
                self._queued.clear()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _send(self, reports: list[tuple[EventType, Any]]) -> Appended:
        """Write `reports` in one round trip (one append, or append_many for several), waiting Redis out."""
        first = self._writes + 1
        self._writes += len(reports)
        # The slot names the writer; within it a write's number alone tells a retry of the
        # latest write from a new one, and every stream entry stores its key.
        keys = [str(n) for n in range(first, self._writes + 1)]
        slot = f"c{self.attempt}.{self._writer}"
        event_type, data = reports[-1]

        def append() -> Awaitable[Appended]:
            if len(reports) > 1:
                return self.events.append_many(
                    self.job_id, reports, attempt=self.attempt, keys=keys, slot=slot, incarnation=self.incarnation,
                    shared=self.shared,
                )
            return self.events.append(
                self.job_id, event_type, data, attempt=self.attempt, key=keys[0], incarnation=self.incarnation,
                slot=slot, shared=self.shared,
            )

        try:
            appended = await self._patiently(f"{event_type.value} report", append)
        except JobNotFound as exc:
            raise JobCancelled(f"job {self.job_id} was deleted") from exc
        except JobReplaced as exc:
            raise AttemptLost(str(exc)) from exc
        except TransitionRefused as exc:
            if exc.state in TERMINAL_STATES:  # cancelled through the API while we ran
                raise JobCancelled(str(exc)) from exc
            raise AttemptLost(str(exc)) from exc
        self.cancel_requested = appended.cancel_requested
        self._raise_if_cancelled()
        return appended

    async def _patiently(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if self.patience is None:
            return await call()
        return await self.patience.run(f"job {self.job_id} attempt {self.attempt}: {what}", call)

"""The audit of one job: its attempts, phases and timeline, folded from its events.

`AuditBuilder` takes the events one at a time, so a job of any length is audited in
bounded memory: durations are computed over every event, while the timeline keeps its
first and last rows, every transition in between, and counts of what it left out.
app/audit_report.py renders the result as a PDF.

Time is split the way the state machine splits it, so the parts add up: *queued*
(submitted to the first `started`), *running* (each attempt, `started` to the event
that ended it; phases live inside attempts), and *waiting to retry* (`retrying` to the
next `started`, or to the terminal event of a job cancelled or failed while it waited).
A retry's backoff is never counted as running, nor in a phase.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import msgspec

from jobtrail.activity import ACTIVITY_TYPES
from jobtrail.events import Event, EventType
from jobtrail.jobstate import JobState

# An attempt ends, and its open phase with it, at any of these.
_ATTEMPT_ENDS = frozenset({EventType.RETRYING, EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


class Span(msgspec.Struct, kw_only=True):
    """A stretch of time: one attempt, or one phase within an attempt."""

    name: str  # the phase, or the attempt's worker
    attempt: int
    start_ms: int
    end_ms: int | None = None  # None: still going when the audit was made
    outcome: str | None = None  # attempts only: the event that ended it
    detail: str = ""  # attempts only: the error that ended it, if any

    def duration_ms(self, now_ms: int) -> int:
        return max(0, (self.end_ms if self.end_ms is not None else now_ms) - self.start_ms)


class Omitted(msgspec.Struct, kw_only=True):
    """A run of timeline rows left out of the report, counted by event type."""

    count: int = 0
    by_type: Counter[str] = msgspec.field(default_factory=Counter)

    def add(self, event: Event) -> None:
        self.count += 1
        self.by_type[event.type.value] += 1


class Audit(msgspec.Struct, kw_only=True):
    """Everything the report shows about one job."""

    job: JobState
    now_ms: int
    event_count: int
    counts: dict[str, int]
    first_at: int | None
    last_at: int | None
    first_started_at: int | None
    finished_at: int | None
    outcome: Event | None  # the terminal event, if the job has finished
    attempts: list[Span]
    phases: list[Span]
    waits: list[Span]  # from each `retrying` to the next start (or the end)
    timeline: list[Event | Omitted]

    @property
    def omitted(self) -> int:
        return sum(row.count for row in self.timeline if isinstance(row, Omitted))

    def running_ms(self) -> int:
        """Time spent running, summed over the attempts: no queueing, no retry waits."""
        return sum(span.duration_ms(self.now_ms) for span in self.attempts)

    def waiting_ms(self) -> int:
        """Time spent pending between a `retrying` and the next attempt's start."""
        return sum(span.duration_ms(self.now_ms) for span in self.waits)

    def phase_totals(self) -> dict[str, int]:
        """Time per phase name, summed over every attempt, in order of first appearance."""
        totals: dict[str, int] = {}
        for span in self.phases:
            totals[span.name] = totals.get(span.name, 0) + span.duration_ms(self.now_ms)
        return totals


class AuditBuilder:
    """Folds a job's events, oldest first, into an `Audit`."""

    def __init__(self, job: JobState, *, head: int = 500, tail: int = 500) -> None:
        self.job = job
        self.head_size = head
        self.count = 0
        self.counts: Counter[str] = Counter()
        self.first_at: int | None = None
        self.last_at: int | None = None
        self.first_started_at: int | None = None
        self.outcome: Event | None = None
        self.attempts: list[Span] = []
        self.phases: list[Span] = []
        self.waits: list[Span] = []
        self._attempt: Span | None = None
        self._wait: Span | None = None
        self._phase: Span | None = None
        self._head: list[Event] = []
        self._middle: list[Event | Omitted] = []
        self._tail: deque[Event] = deque(maxlen=tail)

    def add(self, event: Event) -> None:
        self.count += 1
        self.counts[event.type.value] += 1
        self.first_at = event.at if self.first_at is None else self.first_at
        self.last_at = event.at
        self._track_attempt(event)
        self._track_phase(event)
        self._track_wait(event)
        if event.terminal:
            self.outcome = event
        self._keep_row(event)

    def _track_attempt(self, event: Event) -> None:
        if event.type is EventType.STARTED:
            self._end_attempt(event.at, "superseded")
            number = int(event.data.get("attempt") or event.attempt)
            self._attempt = Span(name=str(event.data.get("worker", "")), attempt=number, start_ms=event.at)
            self.attempts.append(self._attempt)
            if self.first_started_at is None:
                self.first_started_at = event.at
        elif event.type in _ATTEMPT_ENDS:
            error = event.data.get("error") or {}
            detail = f"{error.get('type', '')}: {error.get('message', '')}" if error else ""
            self._end_attempt(event.at, event.type.value, detail)

    def _end_attempt(self, at: int, outcome: str, detail: str = "") -> None:
        if self._attempt is not None:
            self._attempt.end_ms, self._attempt.outcome, self._attempt.detail = at, outcome, detail
            self._attempt = None

    def _track_phase(self, event: Event) -> None:
        if event.type is EventType.STARTED or event.type in _ATTEMPT_ENDS:
            self._end_phase(event.at)
            return
        if event.type not in (EventType.PHASE, EventType.PROGRESS):
            return
        name = event.data.get("phase")
        if not name or (self._phase is not None and self._phase.name == name):
            return
        self._end_phase(event.at)
        self._phase = Span(name=str(name), attempt=event.attempt, start_ms=event.at)
        self.phases.append(self._phase)

    def _end_phase(self, at: int) -> None:
        if self._phase is not None:
            self._phase.end_ms = at
            self._phase = None

    def _track_wait(self, event: Event) -> None:
        if self._wait is not None and (event.type is EventType.STARTED or event.terminal):
            self._wait.end_ms = event.at
            self._wait = None
        if event.type is EventType.RETRYING:
            number = int(event.data.get("next_attempt") or event.attempt + 1)
            self._wait = Span(name="waiting to retry", attempt=number, start_ms=event.at)
            self.waits.append(self._wait)

    def _keep_row(self, event: Event) -> None:
        if len(self._head) < self.head_size:
            self._head.append(event)
            return
        if len(self._tail) == self._tail.maxlen:
            self._spill(self._tail.popleft())
        if self._tail.maxlen:
            self._tail.append(event)
        else:
            self._spill(event)

    def _spill(self, event: Event) -> None:
        # Between head and tail only transitions (and cancel requests) stay; the rest is counted.
        if event.type in ACTIVITY_TYPES:
            self._middle.append(event)
            return
        if not self._middle or not isinstance(self._middle[-1], Omitted):
            self._middle.append(Omitted())
        self._middle[-1].add(event)  # type: ignore[union-attr]

    def finish(self, now_ms: int) -> Audit:
        return Audit(
            job=self.job,
            now_ms=now_ms,
            event_count=self.count,
            counts=dict(self.counts),
            first_at=self.first_at,
            last_at=self.last_at,
            first_started_at=self.first_started_at,
            finished_at=self.outcome.at if self.outcome else None,
            outcome=self.outcome,
            attempts=self.attempts,
            phases=self.phases,
            waits=self.waits,
            timeline=[*self._head, *self._middle, *self._tail],
        )


def _json(value: Any, limit: int = 300) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _progress(d: dict[str, Any]) -> str:
    parts = [f"{float(d.get('progress', 0)) * 100:.0f}%"]
    if d.get("total") is not None:
        parts.append(f"{d.get('current', 0)}/{d['total']}")
    if d.get("phase"):
        parts.append(f"phase {d['phase']}")
    if d.get("message"):
        parts.append(str(d["message"]))
    return " · ".join(parts)


def _error(d: dict[str, Any]) -> str:
    error = d.get("error") or {}
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _with_reason(d: dict[str, Any]) -> str:
    return d.get("reason") or "(no reason given)"


# One line per event, by type: what a reader of the audit wants to know about it.
SUMMARIES: dict[EventType, Any] = {
    # Params are printed in full under Params, once.
    EventType.SUBMITTED: lambda d: f"kind {d.get('kind')}, max {d.get('max_attempts')} attempts, "
    f"params under Params",
    EventType.STARTED: lambda d: f"attempt {d.get('attempt')} on {d.get('worker')}",
    EventType.PROGRESS: _progress,
    EventType.PHASE: lambda d: " · ".join(str(x) for x in (d.get("phase"), d.get("message")) if x),
    EventType.LOG: lambda d: f"[{d.get('level')}] {d.get('message')}",
    EventType.CANCEL_REQUESTED: _with_reason,
    EventType.RETRYING: lambda d: f"{_error(d)}; attempt {d.get('next_attempt')} in {d.get('delay_s')} s",
    # The result itself is printed once, under Outcome; a timeline row only points there.
    EventType.SUCCEEDED: lambda d: ("no result" if d.get("result") is None else "result under Outcome")
    + (f"; artifact {d['artifact']['name']} ({d['artifact']['size_bytes']:,} bytes)" if d.get("artifact") else ""),
    EventType.FAILED: _error,
    EventType.CANCELLED: _with_reason,
}


def summary(event: Event) -> str:
    """One line saying what the event carried."""
    try:
        return SUMMARIES[event.type](event.data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return _json(event.data)


def duration(ms: int) -> str:
    """A human duration: `350 ms`, `12.5 s`, `4 min 05 s`, `2 h 03 min`."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"

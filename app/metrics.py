"""Every Prometheus metric jobtrail exports, and the rules for their labels, in one place.

One `Metrics` per process, built by the composition root (app/services.py) on a registry
of its own, so two apps in one test process never share counts. The code that measures
calls the methods below; nothing else creates a metric. Label rules:

- never a job id (unbounded: one series per job would sink Prometheus);
- `kind` and event `type` are bounded by the registered kinds and the transition table;
- `tenant` only when JOBTRAIL_METRICS_TENANT_LABEL=on: a deployment with many tenants
  would multiply every series by them. A job without a tenant (an admin's, or open
  mode's) is labelled `-`, as limits count it (app/auth.py, Principal.scope).

Times come from Redis where both ends are Redis's: an event id's ms part is its append
time (app/offsets.py), so a duration between two events, or from an append to a client,
does not mix two machines' clocks unless one end is this process's own clock (the lag).

This module imports nothing of jobtrail's: the event log (core) records into it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

NO_TENANT = "-"
StreamKind = Literal["job", "feed"]
# What an attempt came to: a terminal state, or `retried` (another attempt follows).
Outcome = Literal["succeeded", "failed", "cancelled", "retried"]
# Why the reaper queued a job again (workers/reaper.py).
StallReason = Literal["worker_gone", "pending_stale"]
# (state, tenant) -> how many live jobs; the tenant is None unless the label is on.
LiveCounts = Mapping[tuple[str, str | None], int]

# Buckets in seconds. Jobs run from a second to an hour; waits in the queue from
# milliseconds (an idle worker) to many minutes (a backlog).
_RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def id_ms(event_id: str) -> int:
    """The epoch ms at which Redis appended the stream entry `event_id` (`<ms>-<seq>`)."""
    return int(event_id.partition("-")[0])


def _id_order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return (int(ms or 0), int(seq or 0))


class Metrics:
    """The metric objects of one process, on `registry`."""

    def __init__(self, *, tenant_label: bool) -> None:
        self.tenant_label = tenant_label
        self.registry = CollectorRegistry()
        tenant = ("tenant",) if tenant_label else ()
        reg = self.registry
        self._submitted = Counter(
            "jobtrail_jobs_submitted", "Jobs created (an idempotent repeat creates none)", ["kind", *tenant],
            registry=reg,
        )
        self._events = Counter(
            "jobtrail_job_events", "Events appended to jobs' streams", ["kind", "type", *tenant], registry=reg
        )
        self._duration = Histogram(
            "jobtrail_job_duration_seconds",
            "Run time of an attempt, from its started event to its outcome (`retried`: another attempt follows)",
            ["kind", "outcome", *tenant], buckets=_RUN_BUCKETS, registry=reg,
        )
        self._queue_wait = Histogram(
            "jobtrail_job_queue_wait_seconds", "From a job's submitted event to its first started event",
            ["kind", *tenant], buckets=_WAIT_BUCKETS, registry=reg,
        )
        self._retries = Counter(
            "jobtrail_job_retries", "Attempts that failed and are retried", ["kind", "error_type", *tenant],
            registry=reg,
        )
        self._stalled = Counter(
            "jobtrail_jobs_stalled", "Jobs the reaper found stuck and queued again", ["reason"], registry=reg
        )
        self._append = Histogram(
            "jobtrail_event_append_duration_seconds", "Round trip of the append script (one event)",
            buckets=_APPEND_BUCKETS, registry=reg,
        )
        self._sse = Gauge("jobtrail_sse_streams", "Open server-sent event responses", ["stream"], registry=reg)
        # Moved by the /ws endpoint, one per open socket.
        self.ws_connections = Gauge("jobtrail_ws_connections", "Open WebSocket connections", registry=reg)
        self._hub = Gauge("jobtrail_hub_subscriptions", "Live-tail subscriptions held by the hub", registry=reg)
        self._lag = Histogram(
            "jobtrail_event_delivery_lag_seconds", "From an event's append to its being written to a live client",
            buckets=_LAG_BUCKETS, registry=reg,
        )
        self._live: LiveJobsCollector | None = None
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        for stream in ("job", "feed"):
            self._sse.labels(stream)  # both exported from the start, at 0

    def _tenant(self, tenant: str | None) -> tuple[str, ...]:
        return (tenant or NO_TENANT,) if self.tenant_label else ()

    def _child(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, kept: prometheus_client checks the values and takes a lock on
        every call, and a worker labels several per job. The labels are bounded (see above).
        """
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # --- what the event log, the service and the runner record ---

    def submitted(self, kind: str, tenant: str | None) -> None:
        self._child(self._submitted, kind, *self._tenant(tenant)).inc()

    def appended(self, kind: str, event_type: str, tenant: str | None, count: int = 1) -> None:
        """`count` events of `event_type` appended to a job of `kind`."""
        self._child(self._events, kind, event_type, *self._tenant(tenant)).inc(count)

    def append_took(self, seconds: float) -> None:
        self._append.observe(seconds)

    def attempt_ended(self, kind: str, tenant: str | None, outcome: Outcome, started_id_ms: int, ended_id: str) -> None:
        """An attempt that started at `started_id_ms` ended with the event `ended_id`."""
        seconds = max(id_ms(ended_id) - started_id_ms, 0) / 1000
        self._child(self._duration, kind, outcome, *self._tenant(tenant)).observe(seconds)

    def first_started(self, kind: str, tenant: str | None, created_ms: int, started_id: str) -> None:
        """A job's first attempt started (event `started_id`): how long it waited since it was submitted."""
        waited_s = max(id_ms(started_id) - created_ms, 0) / 1000
        self._child(self._queue_wait, kind, *self._tenant(tenant)).observe(waited_s)

    def retried(self, kind: str, tenant: str | None, error_type: str) -> None:
        self._retries.labels(kind, error_type, *self._tenant(tenant)).inc()

    def stalled(self, reason: StallReason) -> None:
        self._stalled.labels(reason).inc()

    # --- what the API records ---

    def sse_streams(self, stream: StreamKind) -> Gauge:
        """The gauge of open SSE responses of `stream` (`track_inprogress()` around each)."""
        return self._sse.labels(stream)

    def delivered(self, event_ids: Iterable[str], *, live_after: str) -> None:
        """The events `event_ids` were written to a client now (SSE), or queued for its socket (/ws).

        Observed only when live: appended after `live_after`, the job's last event when the
        client's follow began. A replayed event's age is history, not lag. One call per
        write, not per event: the clock and `live_after` are read once for the whole batch.
        """
        after = _id_order(live_after)
        now_ms = time.time() * 1000
        observe = self._lag.observe
        for event_id in event_ids:
            order = _id_order(event_id)
            if order > after:
                observe(max(now_ms - order[0], 0) / 1000)

    def watch_hub(self, subscriber_count: Callable[[], int]) -> None:
        """Export the hub's subscriptions, read at each scrape."""
        self._hub.set_function(subscriber_count)

    def watch_live(self, count: Callable[[], Awaitable[LiveCounts]], timeout_s: float) -> None:
        """Export `jobtrail_jobs{state}`, counted by `count` at each scrape (app/livejobs.py). Once per process."""
        if self._live is None:
            self._live = LiveJobsCollector(count, self.tenant_label, timeout_s)
            self.registry.register(self._live)

    def count_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count the live set on `loop` when a scrape comes from another thread (app/metrics_listener.py)."""
        if self._live is not None:
            self._live.loop = loop

    async def render(self) -> bytes:
        """The Prometheus text of every metric, the live jobs counted afresh (from the event loop)."""
        if self._live is not None:
            await self._live.refresh()
        return generate_latest(self.registry)


class LiveJobsCollector(Collector):
    """`jobtrail_jobs{state}`, from a count of the live set made at scrape time.

    Counting reads Redis, asynchronously; prometheus_client collects synchronously. So
    `render` (on the event loop) counts first and the collector returns that count;
    a scrape from another thread (prometheus_client's own HTTP server, the separate
    metrics bind) runs the count on the loop and waits for it. Scrapes that overlap share
    one count, and one younger than `FRESH_S` is reused: many scrapers cost one walk. A
    count that fails (Redis away) exports no samples, rather than stale ones, and the
    rest of the page is served as usual.
    """

    FRESH_S = 1.0

    def __init__(self, count: Callable[[], Awaitable[LiveCounts]], tenant_label: bool, timeout_s: float) -> None:
        self.count = count
        self.tenant_label = tenant_label
        self.timeout_s = timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._counting: asyncio.Future[LiveCounts] | None = None
        self._latest: LiveCounts | None = None
        self._at = float("-inf")

    async def refresh(self) -> None:
        self.loop = asyncio.get_running_loop()
        if time.monotonic() - self._at < self.FRESH_S:
            return
        if self._counting is None:
            self._counting = asyncio.ensure_future(self._count())
        counting = self._counting
        await asyncio.shield(counting)

    async def _count(self) -> LiveCounts:
        try:
            self._latest = await asyncio.wait_for(self.count(), self.timeout_s)
        except Exception as exc:  # any failure: no samples this scrape, and the page still renders
            log.warning("jobtrail_jobs not counted: %s", exc)
            self._latest = None
        finally:
            self._at = time.monotonic()
            self._counting = None
        return self._latest or {}

    def _refresh_from_thread(self) -> None:
        loop = self.loop
        if loop is None or not loop.is_running():
            self._latest = None
            return
        try:
            asyncio.run_coroutine_threadsafe(self.refresh(), loop).result(self.timeout_s + 1)
        except Exception as exc:  # a loop that is stopping or stuck: no samples this scrape
            log.warning("jobtrail_jobs not counted: %s", exc)
            self._latest = None

    def collect(self) -> Iterable[Metric]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop: a scrape from prometheus_client's server thread
            self._refresh_from_thread()
        if self._latest is None:
            return []
        return [self._family(self._latest)]

    def describe(self) -> Iterable[Metric]:
        return [self._family({})]

    def _family(self, counts: LiveCounts) -> GaugeMetricFamily:
        labels = ["state", "tenant"] if self.tenant_label else ["state"]
        family = GaugeMetricFamily("jobtrail_jobs", "Unfinished jobs by state, from the live set", labels=labels)
        for (state, tenant), value in sorted(_with_zeroes(counts), key=lambda item: (item[0][0], item[0][1] or "")):
            family.add_metric([state, tenant or NO_TENANT] if self.tenant_label else [state], value)
        return family


def _with_zeroes(counts: LiveCounts) -> Iterator[tuple[tuple[str, str | None], int]]:
    """Every count, and pending and running at 0 when no job is in them (absent is not zero to PromQL)."""
    yield from counts.items()
    states = {state for state, _ in counts}
    for state in ("pending", "running"):
        if state not in states:
            yield (state, None), 0

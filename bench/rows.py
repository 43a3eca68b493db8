"""The rows of issue 10's table: what each measures, from which experiment, and its goal.

An experiment runs both of its systems, alternating, and gives each repetition's metrics;
a row reads one metric of it (the median over the repetitions) for jobtrail and for the
reference, and says whether the issue's goal is met.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from bench import fanout, floor, http_rows, workloads
from bench.measure import Bench, Metrics

Experiment = Callable[[Bench], Awaitable[dict[str, list[Metrics]]]]

EXPERIMENTS: dict[str, Experiment] = {
    "w1": workloads.run_w1,
    "w3": workloads.run_w3,
    "round-trips": workloads.run_round_trips,
    "floor": floor.run_floor,
    "post": http_rows.run_post,
    "sse-20": fanout.run_fanout_fast,
    "sse-2": fanout.run_fanout_slow,
    "replay": http_rows.run_replay,
    "append": http_rows.run_append,
    "get": http_rows.run_get,
}


class Row(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    label: str
    experiment: str
    metric: str
    unit: str
    goal: str
    # Whether the goal is met, from jobtrail's figure and the reference's (medians).
    met: Callable[[float, float], bool]
    cpu_metric: str | None = None  # CPU per operation shown beside it
    note_metric: str | None = None  # one more figure of the experiment, shown in the note column
    reference: str | None = None  # which of the experiment's systems; None: its second


ROWS: tuple[Row, ...] = (
    Row(id="w1", label="W1: 200 jobs x 100 progress, an SSE observer each: events/s delivered", experiment="w1",
        metric="events_per_s", unit="/s", goal=">= 1.0x BullMQ", met=lambda j, r: j >= r,
        cpu_metric="cpu_ms_per_event", note_metric="delivered"),
    Row(id="w1-p99", label="W1: emit->observe latency p99, submissions included", experiment="w1",
        metric="p99_ms", unit="ms", goal="<= 50 ms", met=lambda j, r: j <= 50, note_metric="p50_ms"),
    Row(id="w3", label="W3: 1,000 trivial jobs, submit all, every completion observed: jobs/s", experiment="w3",
        metric="jobs_per_s", unit="/s", goal=">= 1.0x BullMQ", met=lambda j, r: j >= r, cpu_metric="cpu_ms_per_job"),
    Row(id="w3-saq", label="W3 against saq: jobs/s", experiment="w3", metric="jobs_per_s", unit="/s",
        goal=">= 2x saq (at the very least)", met=lambda j, r: j >= 2 * r, cpu_metric="cpu_ms_per_job",
        reference="saq"),
    Row(id="cpu-job", label="CPU per trivial job, the system's own processes", experiment="w3",
        metric="cpu_ms_per_job", unit="ms", goal="reported", met=lambda j, r: True),
    Row(id="cpu-event", label="CPU per W1 progress event delivered, the system's own processes", experiment="w1",
        metric="cpu_ms_per_event", unit="ms", goal="reported", met=lambda j, r: True),
    Row(id="round-trips", label="client commands per trivial job, submit to ack (>= its round trips)",
        experiment="round-trips", metric="client_commands_per_job", unit="", goal="<= 8 round trips",
        met=lambda j, r: j <= 8, note_metric="commands_per_job"),
    Row(id="round-trips-reads", label="client round trips per trivial job, submit to ack (Redis socket reads)",
        experiment="round-trips", metric="round_trips_per_job", unit="", goal="<= 8 round trips",
        met=lambda j, r: j <= 8),
    Row(id="floor", label="worker alone: 1,000 queued trivial jobs drained, jobs/s", experiment="floor",
        metric="jobs_per_s", unit="/s", goal="reported", met=lambda j, r: True, cpu_metric="cpu_ms_per_job"),
    Row(id="post", label="POST /jobs per second, one API process", experiment="post", metric="per_s", unit="/s",
        goal=">= 5x today's (350-820)", met=lambda j, r: j >= 5 * 820, cpu_metric="cpu_ms_per_request"),
    Row(id="sse1000-p50", label="1,000 SSE clients on one job at 20 events/s: latency p50", experiment="sse-20",
        metric="p50_ms", unit="ms", goal="reported", met=lambda j, r: True, note_metric="delivered"),
    Row(id="sse1000", label="1,000 SSE clients on one job at 20 events/s: latency p99", experiment="sse-20",
        metric="p99_ms", unit="ms", goal="<= 100 ms, all delivered", met=lambda j, r: j <= 100,
        cpu_metric="cpu_ms_per_delivery", note_metric="delivered"),
    Row(id="sse1000-slow", label="the same at 2 events/s: p99", experiment="sse-2", metric="p99_ms", unit="ms",
        goal="<= 100 ms", met=lambda j, r: j <= 100, cpu_metric="cpu_ms_per_delivery", note_metric="delivered"),
    Row(id="replay", label="replay of 100,000 events over SSE: seconds", experiment="replay", metric="seconds",
        unit="s", goal="<= 1.5x XRANGE", met=lambda j, r: j <= 1.5 * r, cpu_metric="cpu_ms_per_event"),
    Row(id="append", label="append script, server side (redis-benchmark): ops/s", experiment="append",
        metric="per_s", unit="/s", goal=">= 0.25x XADD", met=lambda j, r: j >= 0.25 * r,
        note_metric="server_us_per_op"),
    Row(id="get", label="GET /jobs/{id} requests/s", experiment="get", metric="per_s", unit="/s",
        goal=">= 0.85x bare", met=lambda j, r: j >= 0.85 * r, cpu_metric="cpu_ms_per_request"),
    Row(id="bytes", label="Redis bytes per finished job with 100 progress events", experiment="w1",
        metric="bytes_per_job", unit="B", goal="<= 8 KB, all history kept", met=lambda j, r: j <= 8192),
    Row(id="connections", label="Redis connections of one API process with 1,000 SSE clients", experiment="sse-20",
        metric="connections", unit="", goal="<= 8", met=lambda j, r: j <= 8),
)


def select(only: str | None) -> list[Row]:
    """The rows `--only` names (row or experiment ids, comma-separated, any case); all without it."""
    if not only:
        return list(ROWS)
    wanted = {name.strip().lower() for name in only.split(",") if name.strip()}
    known = {row.id for row in ROWS} | set(EXPERIMENTS)
    unknown = wanted - known
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from {', '.join(sorted(known))}")
    return [row for row in ROWS if row.id in wanted or row.experiment in wanted]

"""The performance suite of issue 10: one command, one table, jobtrail beside its references.

    .venv/bin/python -m bench                    # every row, 3 repetitions
    .venv/bin/python -m bench --only w3,replay --reps 5 --json out.json
    .venv/bin/python -m bench --quick --only append   # a smoke run of a few seconds

It starts its own redis-server on a free port (never the shared one), starts the
systems of each experiment as real processes, measures them alternately, and prints per
row the medians of jobtrail and the reference, their ratio, CPU per operation, and the
issue's goal. A row whose experiment fails shows `error: ...`; the others still run.
The BullMQ rows install bullmq and ioredis from npm into bench/.node the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import msgspec

from bench.measure import Bench, Metrics, median_metrics
from bench.redis_server import BenchRedis
from bench.rows import EXPERIMENTS, Row, select

EXPERIMENT_TIMEOUT_S = 1200.0


class Outcome(msgspec.Struct, kw_only=True):
    """An experiment's repetitions per system (jobtrail first), or why it failed."""

    systems: list[str] = msgspec.field(default_factory=list)
    samples: dict[str, list[Metrics]] = msgspec.field(default_factory=dict)
    error: str | None = None

    def median(self, system: str) -> Metrics:
        return median_metrics(self.samples[system])


async def run_experiment(bench: Bench, name: str) -> Outcome:
    started = time.monotonic()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        samples = await asyncio.wait_for(EXPERIMENTS[name](bench), EXPERIMENT_TIMEOUT_S)
        outcome = Outcome(systems=list(samples), samples=samples)
    except Exception as exc:
        (bench.run_dir / f"{name}-error.txt").write_text(traceback.format_exc())
        outcome = Outcome(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"[:160])
    finally:
        bench.redis.flush()  # every experiment starts from an empty Redis
    print(f"[bench] {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return outcome


def figure(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "B":
        return f"{value / 1024:.1f} KB"
    if unit == "s":
        return f"{value:.2f} s"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip() if unit not in ("/s", "") else f"{text}{unit}"


class Line(msgspec.Struct, kw_only=True):
    """One row of the table, as printed and as written to --json."""

    id: str
    label: str
    jobtrail: float | None = None
    reference_name: str | None = None
    reference: float | None = None
    ratio: float | None = None
    cpu: tuple[float, float] | None = None  # ms per operation: jobtrail, reference
    note: tuple[float, float] | None = None  # the row's note metric: jobtrail, reference
    goal: str = ""
    met: bool | None = None
    error: str | None = None


def line(row: Row, outcome: Outcome) -> Line:
    if outcome.error:
        return Line(id=row.id, label=row.label, goal=row.goal, error=outcome.error)
    ours, theirs = outcome.systems[0], row.reference or outcome.systems[1]
    if theirs not in outcome.samples:
        error = f"{theirs} was not measured (saq: pip install -e '.[bench]')"
        return Line(id=row.id, label=row.label, goal=row.goal, error=error)
    mine, ref = outcome.median(ours), outcome.median(theirs)
    j, r = mine[row.metric], ref[row.metric]
    cpu = (mine[row.cpu_metric], ref[row.cpu_metric]) if row.cpu_metric else None
    note = (mine[row.note_metric], ref[row.note_metric]) if row.note_metric else None
    return Line(
        id=row.id, label=row.label, jobtrail=j, reference_name=theirs, reference=r,
        ratio=j / r if r else math.nan, cpu=cpu, note=note,
        goal=row.goal, met=row.met(j, r),
    )


def render(rows: list[Row], lines: list[Line]) -> str:
    head = ["row", "jobtrail", "reference", "ratio", "CPU ms/op (jt / ref)", "goal", "met", "note"]
    table = [head, ["---"] * len(head)]
    for row, entry in zip(rows, lines, strict=True):
        if entry.error is not None:
            table.append([row.label, f"error: {entry.error}", "", "", "", row.goal, "", ""])
            continue
        assert entry.jobtrail is not None and entry.reference is not None
        cpu = f"{entry.cpu[0]:.3g} / {entry.cpu[1]:.3g}" if entry.cpu else ""
        note = "" if entry.note is None else f"{row.note_metric}: {entry.note[0]:.3g} / {entry.note[1]:.3g}"
        table.append([
            row.label, figure(entry.jobtrail, row.unit), f"{entry.reference_name} {figure(entry.reference, row.unit)}",
            f"{entry.ratio:.2f}", cpu, row.goal, "yes" if entry.met else "no", note,
        ])
    return "\n".join("| " + " | ".join(cells) + " |" for cells in table)


def machine(redis: BenchRedis) -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    try:
        import hiredis  # noqa: F401 - only whether redis-py parses with it
        parser = "hiredis parser"
    except ImportError:
        parser = "pure-Python RESP parser"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} cores, {model}; Redis {redis.version()}; Python {platform.python_version()}, "
            f"redis-py with the {parser}; load average at the end {load}")


async def run(args: argparse.Namespace) -> int:
    rows = select(args.only)
    names = list(dict.fromkeys(row.experiment for row in rows))
    run_dir = Path(tempfile.mkdtemp(prefix="jobtrail-bench-"))
    outcomes: dict[str, Outcome] = {}
    with BenchRedis() as redis:
        bench = Bench(redis=redis, run_dir=run_dir, reps=args.reps, quick=args.quick)
        for name in names:
            outcomes[name] = await run_experiment(bench, name)
        about = machine(redis)
    lines = [line(row, outcomes[row.experiment]) for row in rows]
    print(render(rows, lines))
    print(f"\n{about}; {args.reps} repetition(s){', quick' if args.quick else ''}; process logs in {run_dir}")
    if args.json:
        report = {"machine": about, "reps": args.reps, "quick": args.quick, "rows": lines,
                  "samples": {name: outcome.samples for name, outcome in outcomes.items()}}
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    return 1 if any(entry.error for entry in lines) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="ROWS", help="comma-separated row or experiment ids, e.g. w3,replay "
                        f"(experiments: {', '.join(EXPERIMENTS)})")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per system; the table shows medians")
    parser.add_argument("--quick", action="store_true", help="small loads, for a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write every figure and repetition as JSON")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    try:
        select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        print("[bench] interrupted; every process it started is stopped", file=sys.stderr)
        return 130


def _interrupt(sig: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: unwinds through every `finally`, so the processes started are stopped."""
    raise KeyboardInterrupt

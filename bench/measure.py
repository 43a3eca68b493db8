"""What every experiment shares: the run's context, alternating the systems, percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from bench.redis_server import BenchRedis

Metrics = dict[str, float]


class Bench(msgspec.Struct, kw_only=True):
    """One run: its Redis, its log directory, how many repetitions, and whether it is the quick one."""

    redis: BenchRedis
    run_dir: Path
    reps: int
    quick: bool

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


async def alternate(reps: int, measures: dict[str, Callable[[], Awaitable[Metrics]]]) -> dict[str, list[Metrics]]:
    """Each system measured `reps` times, their order swapped every repetition (A B, B A, ...),
    so a machine that gets busier during the run weighs on both alike."""
    results: dict[str, list[Metrics]] = {name: [] for name in measures}
    order = list(measures)
    for rep in range(reps):
        for name in order if rep % 2 == 0 else reversed(order):
            results[name].append(await measures[name]())
    return results


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def median_metrics(samples: list[Metrics]) -> Metrics:
    """Per metric, the median over the repetitions."""
    names = {name for sample in samples for name in sample}
    return {name: statistics.median(s[name] for s in samples if name in s) for name in sorted(names)}

"""saq's side of W3 (the issue's second reference for it), run by bench/workloads.py as two processes.

    python -m bench.saq_side worker PORT QUEUE CONCURRENCY   # prints "ready", runs until SIGTERM
    python -m bench.saq_side w3 PORT QUEUE JOBS              # prints one JSON line (SaqReport)

`w3` enqueues JOBS trivial jobs and waits for each result with `Queue.map`, saq's own way
to submit many jobs and collect them (it polls their state; every 10 ms here, so the poll
adds little to the time). Needs the optional `bench` extra: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # saq is imported where it runs: the rest of the bench works without the extra
    from saq import Queue

POLL_S = 0.01


class SaqReport(msgspec.Struct, frozen=True):
    elapsed_ms: float  # first enqueue to the last result collected
    completed: int
    cpu_s: float  # this process's own CPU time


async def noop(ctx: dict[str, Any]) -> dict[str, int]:
    return {}


def queue(port: str, name: str) -> Queue:
    from saq import Queue

    return Queue.from_url(f"redis://127.0.0.1:{port}/0", name=name)


async def work(port: str, name: str, concurrency: str) -> None:
    from saq import Worker

    jobs = queue(port, name)
    await jobs.connect()
    worker = Worker(jobs, functions=[("noop", noop)], concurrency=int(concurrency))
    print("ready", flush=True)
    await worker.start()


async def w3(port: str, name: str, count: str) -> None:
    jobs = queue(port, name)
    await jobs.connect()
    cpu = _cpu()
    start = time.monotonic()
    results = await jobs.map("noop", [{} for _ in range(int(count))], timeout=300, poll_interval=POLL_S)
    elapsed = time.monotonic() - start
    print(msgspec.json.encode(SaqReport(elapsed_ms=1000 * elapsed, completed=len(results), cpu_s=_cpu() - cpu))
          .decode(), flush=True)
    await jobs.disconnect()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    mode, *args = sys.argv[1:]
    asyncio.run({"worker": work, "w3": w3}[mode](*args))


if __name__ == "__main__":
    main()

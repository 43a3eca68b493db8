"""Hub bench: one API process's hub watching many jobs, each receiving events; is every event delivered, how fast.

    .venv/bin/python -m bench.hub                      # 100 and 10,000 watched jobs, 1 event/s each
    .venv/bin/python -m bench.hub --jobs 100,10000 --seconds 20 --rate 1

Starts its own redis-server on a free port. In this process: the hub (app/hub.py) with one
subscriber per job, as an SSE client has; in a second process: a writer appending one
progress event per job per 1/rate seconds through the append script (so each publishes its
wake), spread evenly over the second. Each event carries its emit time; the hub's side notes
when the subscriber got it. Reported per row: events emitted and delivered, p50/p99
emit→observe, and CPU of the hub's process per delivered event (the stable figure on a
shared machine). `--fanout` adds a row of 1,000 subscribers on one job at 20 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from jobtrail.config import Settings
from jobtrail.events import EventType, ProgressData, StartedData, SubmittedData
from jobtrail.services import open_services


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return server, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _settings(url: str, prefix: str) -> Settings:
    return Settings(redis_url=url, prefix=prefix, auth="off", redis_pool_size=8, sse_queue_size=10_000)


async def _create(url: str, prefix: str, jobs: list[str]) -> None:
    services = open_services(_settings(url, prefix), role="bench")
    for start in range(0, len(jobs), 200):
        chunk = jobs[start : start + 200]
        await asyncio.gather(*(services.events.append(j, EventType.SUBMITTED,
                                                      SubmittedData(kind="demo", params={}, max_attempts=1))
                               for j in chunk))
        await asyncio.gather(*(services.events.append(j, EventType.STARTED, StartedData(worker="b", attempt=1),
                                                      attempt=1) for j in chunk))
    await services.redis.aclose()


def _writer(url: str, prefix: str, jobs: list[str], rate: float, seconds: float, start_at: float) -> None:
    """Append `rate` events/s to each job for `seconds`, spread over each period; `current` carries the emit time."""

    async def run() -> None:
        services = open_services(_settings(url, prefix), role="bench-writer")
        period = 1.0 / rate
        rounds = int(seconds * rate)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        slice_s = period / len(jobs)
        inflight: set[asyncio.Task[object]] = set()
        for r in range(rounds):
            base = start_at + r * period
            for n, job in enumerate(jobs):
                due = base + n * slice_s
                delay = due - time.time()
                if delay > 0.002:
                    await asyncio.sleep(delay)
                emitted_us = int(time.time() * 1_000_000)
                task = asyncio.create_task(services.events.append(
                    job, EventType.PROGRESS, ProgressData(progress=0.5, current=emitted_us, total=r + 1)))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                if len(inflight) > 64:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        if inflight:
            await asyncio.wait(inflight)
        await services.redis.aclose()

    asyncio.run(run())


async def _row(url: str, jobs_count: int, subscribers_per_job: int, rate: float, seconds: float) -> dict[str, object]:
    prefix = f"bench-hub-{uuid.uuid4().hex[:8]}"
    jobs = [f"j{n}" for n in range(jobs_count)]
    await _create(url, prefix, jobs)
    services = open_services(_settings(url, prefix), role="api")
    hub = services.hub
    hub.start()
    latencies: list[float] = []
    delivered = 0

    async def consume(sub) -> None:  # type: ignore[no-untyped-def]
        nonlocal delivered
        while True:
            event = await sub.get(timeout=3600)
            if event is None or event.type is not EventType.PROGRESS:
                continue
            latencies.append(time.time() - event.data["current"] / 1_000_000)
            delivered += 1

    consumers = []
    for start in range(0, jobs_count, 500):
        chunk = jobs[start : start + 500]
        subs = await asyncio.gather(*(hub.subscribe(services.keys.events(j), after="0-0")
                                      for j in chunk for _ in range(subscribers_per_job)))
        consumers += [asyncio.create_task(consume(s)) for s in subs]
    await asyncio.sleep(1.0)  # the subscribe-time reads are done
    start_at = time.time() + 1.0
    writer = multiprocessing.Process(target=_writer, args=(url, prefix, jobs, rate, seconds, start_at))
    cpu0 = time.process_time()
    writer.start()
    expected = jobs_count * subscribers_per_job * int(seconds * rate)
    await asyncio.get_running_loop().run_in_executor(None, writer.join)
    deadline = time.time() + 10
    while delivered < expected and time.time() < deadline:
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    connections = hub.wakes.connections
    await hub.stop()
    await services.redis.aclose()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"jobs": jobs_count, "subs/job": subscribers_per_job, "ev/s/job": rate, "emitted": expected,
            "delivered": delivered, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "cpu_us_per_event": cpu / max(delivered, 1) * 1e6, "pubsub_conns": connections,
            "median_ms": statistics.median(latencies) * 1000 if latencies else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="100,10000", help="watched-job counts, comma-separated")
    parser.add_argument("--rate", type=float, default=1.0, help="events per second per job")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fanout", action="store_true", help="also 1,000 subscribers on one job at 20 ev/s")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-hub-")
    server, url = (None, args.redis_url) if args.redis_url else _start_redis(tmp)
    rows = []
    try:
        plan = [(int(n), 1, args.rate) for n in args.jobs.split(",")]
        if args.fanout:
            plan.append((1, 1000, 20.0))
        for jobs, subs, rate in plan:
            rows.append(asyncio.run(_row(url, jobs, subs, rate, args.seconds)))
            print(f"  done: {rows[-1]['jobs']} jobs x {subs} subscribers", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"hub bench: one process, {args.seconds:.0f} s per row, {os.cpu_count()} CPUs (shared machine)")
    print("| watched jobs | subscribers/job | events/s/job | emitted | delivered | p50 ms | p99 ms "
          "| hub CPU µs/event | pub/sub conns |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['jobs']:,} | {r['subs/job']:,} | {r['ev/s/job']:g} | {r['emitted']:,} | {r['delivered']:,} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_us_per_event']:.0f} | {r['pubsub_conns']} |")
    return 0 if all(r["delivered"] == r["emitted"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

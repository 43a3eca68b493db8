"""1,000 SSE clients on ONE job: emit->observe latency, deliveries, Redis connections of the API.

jobtrail: a `bench.progress` job reporting at the row's rate, its clients connected before
it starts; each client reads its job's stream to the end (replay included), so every event
must reach every client. The reference: the bare app's fan-out (bench/bare_app.py), the
bench appending to its stream at the same rate. Latency counts the events emitted once
every client was connected, from the stream entry id's milliseconds to arrival. Connections:
CLIENT LIST entries that are the API process's own sockets, mid-run.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from subprocess import Popen

import redis.asyncio as aioredis

from bench.load import SseMessage, sse
from bench.measure import Bench, Metrics, alternate, percentile
from bench.procs import Processes, cpu_seconds, local_ports_to
from bench.systems import BareApp, Jobtrail
from bench.workloads import TERMINAL, submit_all

CONNECT_BATCH = 50


class Clients:
    """The row's SSE clients and what they saw."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received = 0
        self.since_ms = float("inf")  # events emitted from then on count for latency
        self.tasks: list[asyncio.Task[int]] = []

    def on_message(self, message: SseMessage) -> bool:
        if message.event == "progress" and message.emitted_ms is not None:
            self.received += 1
            if message.emitted_ms >= self.since_ms:
                self.latencies.append(message.received_ms - message.emitted_ms)
        return message.event in TERMINAL

    async def connect(self, port: int, path: str, count: int) -> None:
        """Open `count` streams, a batch at a time, and wait until each has its answer's head."""
        for start in range(0, count, CONNECT_BATCH):
            batch = [asyncio.Event() for _ in range(min(CONNECT_BATCH, count - start))]
            self.tasks += [asyncio.create_task(sse(port, path, self.on_message, connected=e, timeout=600))
                           for e in batch]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in batch)), 60)
        self.since_ms = time.time() * 1000

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def finish(self, timeout: float) -> None:
        statuses = await asyncio.wait_for(asyncio.gather(*self.tasks), timeout)
        if any(status != 200 for status in statuses):
            raise RuntimeError(f"event streams answered {sorted(set(statuses))}")


async def redis_connections(bench: Bench, process: Popen[bytes]) -> int:
    ports = local_ports_to(process.pid, bench.redis.port)
    with bench.redis.client() as client:
        listed = client.client_list()
    return sum(1 for entry in listed if int(entry["addr"].rsplit(":", 1)[1]) in ports)


def metrics(clients: Clients, expected: int, cpu: float, connections: int) -> Metrics:
    return {
        "p50_ms": percentile(clients.latencies, 0.5), "p99_ms": percentile(clients.latencies, 0.99),
        "delivered": clients.received / expected, "connections": connections,
        "cpu_ms_per_delivery": 1000 * cpu / max(clients.received, 1),
    }


async def jobtrail_fanout(bench: Bench, system: Jobtrail, clients_n: int, per_s: int, seconds: float) -> Metrics:
    assert system.api is not None
    count = int(per_s * seconds)
    start_at = int(time.time() * 1000 + 3000 + clients_n * 10)
    params = {"count": count, "interval_ms": 1000 / per_s, "start_at_ms": start_at}
    async with Clients() as clients:
        (job_id,) = await submit_all(system.port, [json.dumps({"kind": "bench.progress", "params": params}).encode()])
        cpu = cpu_seconds(system.pids)
        await clients.connect(system.port, f"/jobs/{job_id}/events", clients_n)
        await asyncio.sleep(max(start_at / 1000 - time.time(), 0) + seconds / 2)
        connections = await redis_connections(bench, system.api)
        await clients.finish(seconds + 300)
        cpu = cpu_seconds(system.pids) - cpu
    return metrics(clients, clients_n * count, cpu, connections)


async def bare_fanout(bench: Bench, system: BareApp, clients_n: int, per_s: int, seconds: float) -> Metrics:
    assert system.process is not None
    stream = f"bare-fanout-{uuid.uuid4().hex[:8]}"
    count = int(per_s * seconds)
    async with aioredis.from_url(bench.redis.url, decode_responses=True) as redis, Clients() as clients:
        cpu = cpu_seconds(system.pids)
        await clients.connect(system.port, f"/fanout/{stream}", clients_n)
        await asyncio.sleep(0.5)  # the app's XREAD names the stream from its next read on
        start = time.monotonic()
        data = json.dumps({"progress": 0.5, "current": 50, "total": 100, "message": "step 50/100"})
        connections = 0
        for step in range(1, count + 1):
            await asyncio.sleep(max(start + step / per_s - time.monotonic(), 0))
            await redis.xadd(stream, {"type": "progress", "at": int(time.time() * 1000), "data": data})
            if step == count // 2:
                connections = await redis_connections(bench, system.process)
        await redis.xadd(stream, {"type": "end"})
        await clients.finish(300)
        cpu = cpu_seconds(system.pids) - cpu
    return metrics(clients, clients_n * count, cpu, connections)


async def run_fanout(bench: Bench, per_s: int, seconds: float) -> dict[str, list[Metrics]]:
    clients_n = bench.scale(1000, 50)
    seconds = seconds if not bench.quick else 2
    with Processes(bench.run_dir / f"fanout-{per_s}") as procs:
        jobtrail = await Jobtrail(procs, bench.redis).start()
        bare = await BareApp(procs, bench.redis).start()
        return await alternate(bench.reps, {
            "jobtrail": lambda: jobtrail_fanout(bench, jobtrail, clients_n, per_s, seconds),
            "bare fan-out": lambda: bare_fanout(bench, bare, clients_n, per_s, seconds),
        })


async def run_fanout_fast(bench: Bench) -> dict[str, list[Metrics]]:
    return await run_fanout(bench, 20, 5)


async def run_fanout_slow(bench: Bench) -> dict[str, list[Metrics]]:
    return await run_fanout(bench, 2, 10)

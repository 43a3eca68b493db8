"""W1, W3 and the commands per trivial job: jobtrail against BullMQ on the same Redis.

- W1: 200 jobs x 100 progress reports (no coalescing), one observer per job (jobtrail: one
  SSE stream per job, opened as its submission is answered; BullMQ: QueueEvents, its way to
  follow jobs). Events/s delivered from the first submission to the last event observed,
  emit->observe latency (stream entry id, or BullMQ's emit time, to arrival), CPU per event
  of each system's own processes, and Redis bytes per finished job: MEMORY USAGE (SAMPLES 0,
  exact) of the job's own keys (jobtrail: state hash, event stream, dedupe hash; BullMQ: the
  job hash, its logs if any). Entries in keys shared by every job (index, feed, queue stream,
  BullMQ's completed set and events stream) are not counted, for either.
- W3: 1,000 trivial jobs submitted at once, until every completion is observed (jobtrail:
  its activity feed, `GET /events`; BullMQ: QueueEvents). Jobs/s and CPU per job.
- Commands per trivial job, submit to acknowledgement: MONITOR on the bench's Redis while
  100 trivial jobs run; commands sent by clients (an upper bound on round trips: a pipeline
  sends several in one) and all commands, those run inside scripts included. And the round
  trips themselves: Redis's reads from client sockets over the same run (INFO stats,
  total_reads_processed), one per command or pipeline a client sends and waits for.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from subprocess import Popen
from typing import TypeVar

import msgspec

from bench.load import SseMessage, exchange, request, sse
from bench.measure import Bench, Metrics, alternate, percentile
from bench.procs import Processes, cpu_seconds
from bench.saq_side import SaqReport
from bench.systems import BullMQ, Jobtrail, Saq, saq_installed
from jobtrail.keys import Keys

R = TypeVar("R", bound=msgspec.Struct)

TERMINAL = {"succeeded", "failed", "cancelled"}
SUBMIT_CONNECTIONS = 20
JOB_TIMEOUT_S = 300.0


async def submit_all(port: int, bodies: list[bytes], on_id: Callable[[str], None] | None = None) -> list[str]:
    """POST /jobs each body over SUBMIT_CONNECTIONS keep-alive connections; the job ids, in answer order."""
    todo = list(reversed(bodies))
    ids: list[str] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while todo:
                status, body = await exchange(reader, writer, request("POST", "/jobs", todo.pop()))
                if status != 202:
                    raise RuntimeError(f"POST /jobs answered {status}: {body[:300]!r}")
                job_id = json.loads(body)["id"]
                ids.append(job_id)
                if on_id is not None:
                    on_id(job_id)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(SUBMIT_CONNECTIONS))), JOB_TIMEOUT_S)
    return ids


def memory_usage(bench: Bench, keys: list[str]) -> int:
    """Bytes of these keys, exactly (MEMORY USAGE ... SAMPLES 0 counts every stream entry)."""
    with bench.redis.client() as client, client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        return sum(int(size or 0) for size in pipe.execute())


async def jobtrail_w1(bench: Bench, system: Jobtrail, jobs: int, count: int) -> Metrics:
    latencies: list[float] = []
    observed = 0
    last = 0.0
    observers: list[asyncio.Task[int]] = []

    def on_message(message: SseMessage) -> bool:
        nonlocal observed, last
        if message.event == "progress" and message.emitted_ms is not None:
            observed += 1
            last = time.monotonic()
            latencies.append(message.received_ms - message.emitted_ms)
        return message.event in TERMINAL

    def observe(job_id: str) -> None:
        observers.append(asyncio.create_task(sse(system.port, f"/jobs/{job_id}/events", on_message,
                                                 timeout=JOB_TIMEOUT_S)))

    cpu = cpu_seconds(system.pids)
    start = time.monotonic()
    body = json.dumps({"kind": "bench.progress", "params": {"count": count}}).encode()
    ids = await submit_all(system.port, [body] * jobs, observe)
    await asyncio.gather(*observers)
    cpu = cpu_seconds(system.pids) - cpu
    keys = Keys(system.prefix)
    memory = memory_usage(bench, [key for job_id in ids for key in keys.all_job_keys(job_id)])
    return w1_metrics(observed, jobs * count, last - start, latencies, cpu, memory, jobs)


def w1_metrics(observed: int, expected: int, elapsed: float, latencies: list[float], cpu: float, memory: int,
               jobs: int) -> Metrics:
    return {
        "events_per_s": observed / elapsed, "delivered": observed / expected, "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99), "cpu_ms_per_event": 1000 * cpu / max(observed, 1),
        "bytes_per_job": memory / jobs,
    }


class ProducerReport(msgspec.Struct, frozen=True):
    """The JSON line bench/bullmq_producer.mjs prints when it is done."""

    elapsed_ms: float  # first add to last observation
    progress: int  # progress events observed
    completed: int
    latencies: list[float]  # ms, emit to observe
    ids: list[str]
    cpu_s: float  # the producer's own CPU time


async def finished_report(procs: Processes, process: Popen[bytes], name: str, report: type[R]) -> R:
    """Wait for a producer process to exit, and decode the JSON line it printed last."""
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), JOB_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(f"{name} did not finish in {JOB_TIMEOUT_S:.0f} s") from None
    lines = (procs.run_dir / f"{name}.log").read_text().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{name} exited with {process.returncode}:\n{procs.log_tail(name)}")
    return msgspec.json.decode(lines[-1], type=report)


async def bullmq_run(system: BullMQ, workload: str, jobs: int, count: int = 0) -> tuple[ProducerReport, float]:
    """One producer run (bench/bullmq_producer.mjs): its JSON report, and the CPU of producer and worker."""
    cpu = cpu_seconds(system.pids)
    report = await finished_report(system.procs, *system.producer(workload, jobs, count), ProducerReport)
    return report, cpu_seconds(system.pids) - cpu + report.cpu_s


async def bullmq_w1(bench: Bench, system: BullMQ, jobs: int, count: int) -> Metrics:
    report, cpu = await bullmq_run(system, "w1", jobs, count)
    keys = [f"bull:{system.queue}:{job_id}{part}" for job_id in report.ids for part in ("", ":logs")]
    memory = memory_usage(bench, keys)
    return w1_metrics(report.progress, jobs * count, report.elapsed_ms / 1000, report.latencies, cpu, memory, jobs)


async def run_w1(bench: Bench) -> dict[str, list[Metrics]]:
    jobs, count = bench.scale(200, 20), 100
    with Processes(bench.run_dir / "w1") as procs:
        jobtrail = await Jobtrail(procs, bench.redis).start()
        bullmq = await BullMQ(procs, bench.redis).start()
        return await alternate(bench.reps, {
            "jobtrail": lambda: jobtrail_w1(bench, jobtrail, jobs, count),
            "BullMQ": lambda: bullmq_w1(bench, bullmq, jobs, count),
        })


async def jobtrail_w3(system: Jobtrail, jobs: int) -> Metrics:
    """Submit `jobs` trivial jobs; time until the activity feed has shown each one succeed."""
    ours: set[str] = set()
    seen: set[str] = set()
    everything_seen = asyncio.Event()
    connected = asyncio.Event()

    def on_message(message: SseMessage) -> bool:
        if message.event == "succeeded":
            seen.add(json.loads(message.data)["job_id"])
            if len(seen & ours) == jobs:
                everything_seen.set()
                return True
        return False

    feed = asyncio.create_task(sse(system.port, "/events?state=succeeded&kind=bench.noop", on_message,
                                   connected=connected, timeout=JOB_TIMEOUT_S))
    await asyncio.wait_for(connected.wait(), 30)
    cpu = cpu_seconds(system.pids)
    start = time.monotonic()
    body = json.dumps({"kind": "bench.noop", "params": {}}).encode()
    ours.update(await submit_all(system.port, [body] * jobs))
    if len(seen & ours) == jobs:
        everything_seen.set()
    try:
        await asyncio.wait_for(everything_seen.wait(), JOB_TIMEOUT_S)
    finally:
        feed.cancel()
    elapsed, cpu = time.monotonic() - start, cpu_seconds(system.pids) - cpu
    return {"jobs_per_s": jobs / elapsed, "cpu_ms_per_job": 1000 * cpu / jobs}


async def bullmq_w3(system: BullMQ, jobs: int) -> Metrics:
    report, cpu = await bullmq_run(system, "w3", jobs)
    if report.completed != jobs:
        raise RuntimeError(f"BullMQ completed {report.completed} of {jobs} jobs")
    return {"jobs_per_s": jobs / (report.elapsed_ms / 1000), "cpu_ms_per_job": 1000 * cpu / jobs}


async def saq_w3(system: Saq, jobs: int) -> Metrics:
    cpu = cpu_seconds(system.pids)
    report = await finished_report(system.procs, *system.producer(jobs), SaqReport)
    cpu = cpu_seconds(system.pids) - cpu + report.cpu_s
    if report.completed != jobs:
        raise RuntimeError(f"saq completed {report.completed} of {jobs} jobs")
    return {"jobs_per_s": jobs / (report.elapsed_ms / 1000), "cpu_ms_per_job": 1000 * cpu / jobs}


async def run_w3(bench: Bench) -> dict[str, list[Metrics]]:
    """jobtrail, BullMQ, and saq when the `bench` extra is installed (its row says so otherwise)."""
    jobs = bench.scale(1000, 100)
    with Processes(bench.run_dir / "w3") as procs:
        jobtrail = await Jobtrail(procs, bench.redis).start()
        bullmq = await BullMQ(procs, bench.redis).start()
        measures = {
            "jobtrail": lambda: jobtrail_w3(jobtrail, jobs),
            "BullMQ": lambda: bullmq_w3(bullmq, jobs),
        }
        if saq_installed():
            saq = await Saq(procs, bench.redis).start()
            measures["saq"] = lambda: saq_w3(saq, jobs)
        return await alternate(bench.reps, measures)


class Monitor:
    """MONITOR on its own socket, in a thread: commands sent by clients, and those run by scripts."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.client_commands = 0
        self.script_commands = 0
        self.stopped = False

    def read(self) -> None:
        buffer = b""
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return
            *lines, buffer = (buffer + chunk).split(b"\r\n")
            for line in lines:
                if line.startswith(b"+") and b"[" in line:
                    if b" lua]" in line:
                        self.script_commands += 1
                    else:
                        self.client_commands += 1

    async def during(self, work: Awaitable[object]) -> None:
        reader = asyncio.create_task(asyncio.to_thread(self.read))
        try:
            await work
            await asyncio.sleep(0.5)  # the tail of the MONITOR stream
        finally:
            self.stopped = True
            await reader
            self.sock.close()


def socket_reads(bench: Bench) -> int:
    """Redis's count of reads from client sockets (INFO stats): one per round trip, a pipeline's included."""
    with bench.redis.client() as client:
        return int(client.info("stats")["total_reads_processed"])


async def commands_per_job(bench: Bench, work: Callable[[], Awaitable[object]], jobs: int) -> Metrics:
    monitor = Monitor(bench.redis.port)
    reads = socket_reads(bench)
    await monitor.during(work())
    reads = socket_reads(bench) - reads - 1  # the second INFO's own read
    total = monitor.client_commands + monitor.script_commands
    return {"client_commands_per_job": monitor.client_commands / jobs, "commands_per_job": total / jobs,
            "round_trips_per_job": reads / jobs}


async def run_round_trips(bench: Bench) -> dict[str, list[Metrics]]:
    jobs = bench.scale(100, 20)
    with Processes(bench.run_dir / "round-trips") as procs:
        jobtrail = await Jobtrail(procs, bench.redis).start()
        bullmq = await BullMQ(procs, bench.redis).start()
        await asyncio.sleep(1)  # past the workers' start-up commands
        return await alternate(1, {  # a count, not a time: one repetition says it
            "jobtrail": lambda: commands_per_job(bench, lambda: jobtrail_w3(jobtrail, jobs), jobs),
            "BullMQ": lambda: commands_per_job(bench, lambda: bullmq_w3(bullmq, jobs), jobs),
        })

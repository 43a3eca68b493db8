"""The HTTP rows and the raw Redis limits, each against the least that does the same job.

- `POST /jobs`/s of one API process (no worker: submissions only) against the bare app's
  one-XADD handler; `GET /jobs/{id}`/s against the bare app's one HGETALL of the same hash.
  Both over the same raw keep-alive client (bench/load.py), CPU per request of the server.
- replay: every event of a 100,000-event job over SSE, against one redis-py XRANGE of it; CPU per
  event of the API process against that of the process making the XRANGE (this one).
- append script: redis-benchmark sending append.lua's EVALSHA (as EventLog builds it) against
  a bare XADD of the same fields; also the Redis server's CPU per operation.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis

from bench.load import SseMessage, exchange, rate, request, sse
from bench.measure import Bench, Metrics, alternate
from bench.procs import Processes, cpu_seconds
from bench.seeding import event_log, long_job, progress_call, running_job
from bench.systems import BareApp, Jobtrail
from bench.workloads import TERMINAL
from jobtrail.events import TYPE_CODES, EventType

CONNECTIONS = 20
SUBMIT = json.dumps({"kind": "bench.noop", "params": {}}).encode()


async def request_rate(
    bench: Bench, port: int, pids: list[int], make: Callable[[int], bytes], expect: int
) -> Metrics:
    cpu = cpu_seconds(pids)
    count, elapsed = await rate(port, make, expect=expect, seconds=bench.scale(5, 1), connections=CONNECTIONS)
    cpu = cpu_seconds(pids) - cpu
    return {"per_s": count / elapsed, "cpu_ms_per_request": 1000 * cpu / max(count, 1)}


async def run_post(bench: Bench) -> dict[str, list[Metrics]]:
    with Processes(bench.run_dir / "post") as procs:
        jobtrail = await Jobtrail(procs, bench.redis, worker=False).start()
        bare = await BareApp(procs, bench.redis).start()
        post = lambda _: request("POST", "/jobs", SUBMIT)  # noqa: E731 - one request, as data
        return await alternate(bench.reps, {
            "jobtrail": lambda: request_rate(bench, jobtrail.port, jobtrail.pids, post, 202),
            "bare Litestar + XADD": lambda: request_rate(bench, bare.port, bare.pids, post, 202),
        })


async def run_get(bench: Bench) -> dict[str, list[Metrics]]:
    with Processes(bench.run_dir / "get") as procs:
        jobtrail = await Jobtrail(procs, bench.redis, worker=False).start()
        bare = await BareApp(procs, bench.redis, prefix=jobtrail.prefix).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", jobtrail.port)
        status, body = await exchange(reader, writer, request("POST", "/jobs", SUBMIT))
        writer.close()
        if status != 202:
            raise RuntimeError(f"POST /jobs answered {status}: {body[:300]!r}")
        get = request("GET", f"/jobs/{json.loads(body)['id']}")
        return await alternate(bench.reps, {
            "jobtrail": lambda: request_rate(bench, jobtrail.port, jobtrail.pids, lambda _: get, 200),
            "bare Litestar + HGETALL": lambda: request_rate(bench, bare.port, bare.pids, lambda _: get, 200),
        })


async def replay_sse(port: int, pids: list[int], job_id: str, expected: int) -> Metrics:
    received = 0

    def on_message(message: SseMessage) -> bool:
        nonlocal received
        received += 1
        return message.event in TERMINAL

    cpu = cpu_seconds(pids)
    start = time.monotonic()
    status = await sse(port, f"/jobs/{job_id}/events", on_message, timeout=300)
    seconds = time.monotonic() - start
    if status != 200 or received != expected:
        raise RuntimeError(f"replay answered {status} with {received} of {expected} events")
    return {"seconds": seconds, "cpu_ms_per_event": 1000 * (cpu_seconds(pids) - cpu) / expected}


async def replay_xrange(redis: aioredis.Redis, stream: str, expected: int) -> Metrics:
    cpu = time.process_time()
    start = time.monotonic()
    entries = await redis.xrange(stream, "-", "+")
    seconds, cpu = time.monotonic() - start, time.process_time() - cpu
    if len(entries) != expected:
        raise RuntimeError(f"XRANGE gave {len(entries)} of {expected} entries")
    return {"seconds": seconds, "cpu_ms_per_event": 1000 * cpu / expected}


async def run_replay(bench: Bench) -> dict[str, list[Metrics]]:
    count = bench.scale(100_000, 5_000)
    with Processes(bench.run_dir / "replay") as procs:
        jobtrail = await Jobtrail(procs, bench.redis, worker=False).start()
        redis = aioredis.from_url(bench.redis.url, decode_responses=True)
        try:
            job_id = f"replay-{uuid.uuid4().hex[:8]}"
            await long_job(redis, jobtrail.prefix, job_id, count)
            stream = event_log(redis, jobtrail.prefix).keys.events(job_id)
            expected = count + 3  # submitted, started, the progress events, succeeded
            return await alternate(bench.reps, {
                "jobtrail SSE": lambda: replay_sse(jobtrail.port, jobtrail.pids, job_id, expected),
                "redis-py XRANGE": lambda: replay_xrange(redis, stream, expected),
            })
        finally:
            await redis.aclose()


def redis_benchmark(bench: Bench, requests: int, command: list[str]) -> Metrics:
    assert bench.redis.process is not None
    cpu = cpu_seconds([bench.redis.process.pid])
    done = subprocess.run(
        ["redis-benchmark", "-p", str(bench.redis.port), "-n", str(requests), "-c", "50", "-P", "16", "--csv",
         *command],
        capture_output=True, text=True, timeout=300, check=True,
    )
    cpu = cpu_seconds([bench.redis.process.pid]) - cpu
    # "test","rps", then six latencies; the test is the command, its quotes unescaped: count from the end.
    rps = float(re.findall(r'"([0-9.]+)"', done.stdout.strip().splitlines()[-1])[-7])
    return {"per_s": rps, "server_us_per_op": 1e6 * cpu / requests}


async def run_append(bench: Bench) -> dict[str, list[Metrics]]:
    if shutil.which("redis-benchmark") is None:
        raise RuntimeError("redis-benchmark is not installed (apt-get install redis-tools)")
    requests = bench.scale(100_000, 5_000)
    redis = aioredis.from_url(bench.redis.url, decode_responses=True)
    try:
        events = event_log(redis, f"bench{uuid.uuid4().hex[:8]}")
        job_id = "append-bench"
        await running_job(events, job_id)
        call = await progress_call(events, job_id)
    finally:
        await redis.aclose()
    evalsha = ["EVALSHA", call.sha, str(len(call.keys)), *call.keys, *call.args]
    # The entry the script writes for this call (app/events.py: ENTRY_FIELDS), as a bare XADD.
    meta = str(int(call.args[1]) * 100 + TYPE_CODES[EventType.PROGRESS])
    xadd = ["XADD", "bench:bare-stream", "*", "e", meta, "d", str(call.args[2]), "k", str(call.args[3])]
    return await alternate(bench.reps, {
        "append.lua EVALSHA": lambda: asyncio.to_thread(redis_benchmark, bench, requests, evalsha),
        "bare XADD": lambda: asyncio.to_thread(redis_benchmark, bench, requests, xadd),
    })

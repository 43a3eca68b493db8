"""The worker against its floor: a queue of trivial jobs drained by `jobtrail worker` and by bare taskiq.

Both workers run idle first; then the bench writes every job's message onto the queue in
one pipeline and times until the group has read and acknowledged them all (XINFO GROUPS:
lag 0, pending 0). jobtrail's jobs are submitted beforehand by jobtrail's EventLog
(`submitted` only: the API is not part of this row); the floor's messages are the same
`run_job` messages, for a no-op task (bench/taskiq_floor.py). CPU is the worker process's
alone. What jobtrail's runner costs per job is the difference: the ratio says how close
the worker is to what taskiq itself allows on this machine.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis
from taskiq.message import TaskiqMessage

from bench.measure import Bench, Metrics, alternate
from bench.procs import Processes, cpu_seconds
from bench.seeding import event_log
from bench.systems import CONCURRENCY, Jobtrail, jobtrail_env
from jobtrail.events import EventType, SubmittedData
from jobtrail.keys import Keys
from jobtrail.workers.queue import RUN_JOB, group_name

POLL_S = 0.005
TIMEOUT_S = 300.0


def run_job_message(job_id: str) -> bytes:
    """The queue entry's `data` for one run of `job_id`, as taskiq's kicker writes it."""
    message = TaskiqMessage(task_id=uuid.uuid4().hex, task_name=RUN_JOB, labels={}, labels_types={}, args=[job_id],
                            kwargs={})
    return message.model_dump_json().encode()


async def drained(redis: aioredis.Redis, keys: Keys) -> None:
    """Until the workers' group has read and acknowledged every message on the queue."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        groups = await redis.xinfo_groups(keys.queue())
        group = next((g for g in groups if g["name"] == group_name(keys)), None)
        if group is not None and group["lag"] == 0 and group["pending"] == 0:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"the queue was not drained in {TIMEOUT_S:.0f} s")


async def drain(redis: aioredis.Redis, keys: Keys, pid: int, job_ids: list[str]) -> Metrics:
    cpu = cpu_seconds([pid])
    start = time.monotonic()
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.xadd(keys.queue(), {"data": run_job_message(job_id)})
        await pipe.execute()
    await drained(redis, keys)
    elapsed, cpu = time.monotonic() - start, cpu_seconds([pid]) - cpu
    return {"jobs_per_s": len(job_ids) / elapsed, "cpu_ms_per_job": 1000 * cpu / len(job_ids)}


async def jobtrail_drain(redis: aioredis.Redis, system: Jobtrail, jobs: int) -> Metrics:
    events = event_log(redis, system.prefix)
    ids = [f"floor{uuid.uuid4().hex[:12]}" for _ in range(jobs)]
    data = SubmittedData(kind="bench.noop", params={}, max_attempts=1)
    for start in range(0, jobs, 50):  # a few connections at a time, not one per job
        await asyncio.gather(*(events.append(job_id, EventType.SUBMITTED, data) for job_id in ids[start:start + 50]))
    assert system.worker is not None
    return await drain(redis, Keys(system.prefix), system.worker.pid, ids)


async def floor_drain(redis: aioredis.Redis, prefix: str, pid: int, jobs: int) -> Metrics:
    return await drain(redis, Keys(prefix), pid, [f"floor{n}" for n in range(jobs)])


async def run_floor(bench: Bench) -> dict[str, list[Metrics]]:
    jobs = bench.scale(1000, 100)
    with Processes(bench.run_dir / "floor") as procs:
        jobtrail = await Jobtrail(procs, bench.redis).start()
        prefix = f"floor{uuid.uuid4().hex[:8]}"
        name = f"taskiq-floor-{prefix}"
        floor = procs.python(name, ["-m", "bench.taskiq_floor", str(CONCURRENCY)],
                             jobtrail_env(bench.redis, prefix, procs.run_dir))
        await procs.wait_log(floor, name, "ready")
        redis = aioredis.Redis(port=bench.redis.port, decode_responses=True, max_connections=60)
        try:
            return await alternate(bench.reps, {
                "jobtrail": lambda: jobtrail_drain(redis, jobtrail, jobs),
                "taskiq floor": lambda: floor_drain(redis, prefix, floor.pid, jobs),
            })
        finally:
            await redis.aclose()

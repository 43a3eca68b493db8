"""The taskiq floor: a bare taskiq worker on jobtrail's own broker class, its task a no-op.

    python -m bench.taskiq_floor CONCURRENCY   # REDIS_URL, JOBTRAIL_PREFIX; prints "ready", runs until SIGTERM

The same JobBroker (workers/broker.py) on the same kind of client as `jobtrail worker`'s,
the same receiver (taskiq's run_receiver_task) and concurrency, and a task of the same
name that does nothing: what every message costs before jobtrail's runner does anything.
bench/floor.py drains a queue of trivial jobs through it and through `jobtrail worker`.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from taskiq.api import run_receiver_task

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.workers.broker import JobBroker, build_broker
from jobtrail.workers.queue import RUN_JOB


async def noop(job_id: str) -> None:
    return None


async def work(concurrency: int) -> None:
    settings = Settings.from_env()
    broker = build_broker(settings, Keys(settings.prefix))
    assert isinstance(broker, JobBroker)
    broker.register_task(noop, task_name=RUN_JOB)
    await broker.startup()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=concurrency, run_startup=False))
    print("ready", flush=True)
    await stop.wait()
    receiver.cancel()
    await asyncio.gather(receiver, return_exceptions=True)
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(work(int(sys.argv[1])))

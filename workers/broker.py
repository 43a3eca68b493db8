"""The taskiq broker and the one task it carries: `jobtrail.run_job(job_id)`.

With REDIS_URL the broker is taskiq-redis's acknowledged RedisStreamBroker; embedded,
taskiq's InMemoryBroker runs the task in the API process itself.
"""

from __future__ import annotations

from taskiq import AsyncBroker, InMemoryBroker
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from app.config import Settings
from app.keys import Keys
from workers.runner import Runner

RUN_JOB = "jobtrail.run_job"


def build_broker(settings: Settings, keys: Keys) -> AsyncBroker:
    if settings.embedded:
        return InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    return RedisStreamBroker(
        settings.redis_url,
        queue_name=keys.queue(),
        consumer_group_name=f"{keys.prefix}-workers",
        # "0", not "$": jobs enqueued before the first worker ever started are not skipped.
        consumer_id="0",
        idle_timeout=settings.broker_idle_ms,
        max_connection_pool_size=settings.worker_concurrency + 4,
    )


def register_runner(broker: AsyncBroker, runner: Runner) -> None:
    """Make this process execute `run_job` deliveries with `runner`."""

    async def run_job(job_id: str) -> None:
        await runner.run(job_id)

    broker.register_task(run_job, task_name=RUN_JOB)


async def enqueue(broker: AsyncBroker, job_id: str) -> None:
    """Queue one run of a job (one XADD on the Redis broker)."""
    await AsyncKicker(RUN_JOB, broker, labels={}).kiq(job_id)

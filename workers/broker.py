"""The taskiq broker and the one task it carries: `jobtrail.run_job(job_id)`.

With REDIS_URL the broker is taskiq-redis's acknowledged RedisStreamBroker, on the stream
and consumer group that workers/queue.py describes; embedded, taskiq's InMemoryBroker
runs the task in the API process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from taskiq import AckableMessage, AsyncBroker, InMemoryBroker
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.workers.queue import GROUP_START, RUN_JOB, group_name
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)

XREAD_BLOCK_MS = 2000


class JobBroker(RedisStreamBroker):
    """RedisStreamBroker that waits out a Redis outage instead of spinning through it.

    taskiq restarts a failed listener at once, so while Redis is away a worker would
    retry (and log a traceback) hundreds of times a second. And when Redis comes back
    without its data, the consumer group is gone: declare it again, from "0".
    """

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        delay = 0.1
        while True:
            try:
                async for message in super().listen():
                    delay = 0.1
                    yield message
            except RedisError as exc:
                log.warning("broker cannot read the queue (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(RedisError):
                    await self._declare_consumer_group()  # a no-op while the group exists


def build_broker(settings: Settings, keys: Keys) -> AsyncBroker:
    if settings.embedded:
        return InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    assert settings.redis_url is not None  # not embedded: a URL is set
    return JobBroker(
        settings.redis_url,
        queue_name=keys.queue(),
        consumer_group_name=group_name(keys),
        consumer_id=GROUP_START,  # taskiq-redis's name for the id XGROUP CREATE starts the group at
        idle_timeout=settings.broker_idle_ms,
        max_connection_pool_size=settings.worker_concurrency + 4,
        xread_block=XREAD_BLOCK_MS,
        # One message per read: a read claims what it returns for this worker, so a
        # larger batch would sit here, unstarted, while other workers have room.
        xread_count=1,
        # Like app/store.py: give up within the timeout (beyond a blocking read), and
        # reconnect once, so a connection a Redis restart dropped is not an error.
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=XREAD_BLOCK_MS / 1000 + settings.redis_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
    )


def register_runner(broker: AsyncBroker, runner: Runner) -> None:
    """Make this process execute `run_job` deliveries with `runner`."""

    async def run_job(job_id: str) -> None:
        await runner.run(job_id)

    broker.register_task(run_job, task_name=RUN_JOB)


async def enqueue(broker: AsyncBroker, job_id: str) -> None:
    """Queue one run of a job (one XADD on the Redis broker); a Redis failure raises as itself."""
    try:
        await AsyncKicker[[str], None](RUN_JOB, broker, labels={}).kiq(job_id)
    except SendTaskError as exc:
        # taskiq wraps every broker error; unwrapped, Redis being away answers 503, not 500.
        if isinstance(exc.__cause__, RedisError):
            raise exc.__cause__ from None
        raise

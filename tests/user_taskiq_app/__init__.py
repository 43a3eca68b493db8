"""A team's own taskiq app, as it would be written outside jobtrail, plus jobtrail's middleware.

Its broker is taskiq-redis's RedisStreamBroker on a queue of its own, with taskiq's
SmartRetryMiddleware; its worker is started with the taskiq CLI
(`taskiq worker tests.user_taskiq_app:broker`). Only the middleware line and the
`ctx` parameters are jobtrail's. Configured from the environment, so the tests can
point it at their own keys:

    USER_APP_REDIS_URL        the app's broker and result backend
    USER_APP_QUEUE            its queue (results go under `<queue>:results`)
    USER_APP_IDLE_MS          how long a message stays with a silent worker (taskiq-redis's default if unset)
    USER_APP_JOBTRAIL_URL     the Redis of jobtrail's API
    USER_APP_JOBTRAIL_PREFIX  jobtrail's key prefix
"""

from __future__ import annotations

import asyncio
import os

from taskiq import Context, SmartRetryMiddleware, TaskiqDepends
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from jobtrail.taskiq import JobtrailMiddleware, job_context
from jobtrail.workers.context import JobContext, PermanentFailure

QUEUE = os.environ["USER_APP_QUEUE"]

broker = RedisStreamBroker(
    os.environ["USER_APP_REDIS_URL"], queue_name=QUEUE, consumer_group_name=f"{QUEUE}-workers",
    idle_timeout=int(os.environ.get("USER_APP_IDLE_MS", "600000")),
)
broker = broker.with_result_backend(
    RedisAsyncResultBackend(os.environ["USER_APP_REDIS_URL"], prefix_str=f"{QUEUE}:results", result_ex_time=600)
)
broker.add_middlewares(
    SmartRetryMiddleware(default_retry_count=3, default_delay=0.2),
    JobtrailMiddleware(os.environ["USER_APP_JOBTRAIL_URL"], prefix=os.environ["USER_APP_JOBTRAIL_PREFIX"]),
)


@broker.task
async def add(a: int, b: int) -> int:
    return a + b


@broker.task(retry_on_error=True)
async def count_to(n: int, delay_s: float = 0.0, ctx: JobContext = TaskiqDepends(job_context)) -> dict[str, int]:
    """Reports progress at every step; a cancelled job stops it at its next report."""
    await ctx.phase("counting")
    for i in range(1, n + 1):
        await asyncio.sleep(delay_s)
        await ctx.progress(i / n, f"{i} of {n}", current=i, total=n)
    return {"counted": n}


@broker.task(retry_on_error=True, max_retries=3)
async def flaky(failures: int, context: Context = TaskiqDepends()) -> str:
    """Fails its first `failures` runs; taskiq's retry middleware runs it again."""
    run = int(context.message.labels.get("_retries", 0)) + 1
    if run <= failures:
        raise ConnectionError(f"run {run} of a flaky task")
    return f"ok on run {run}"


@broker.task(retry_on_error=True, max_retries=2)
async def doomed() -> None:
    raise ValueError("this never works")


@broker.task(retry_on_error=True, max_retries=3)
async def refuse(reason: str) -> None:
    raise PermanentFailure(reason)

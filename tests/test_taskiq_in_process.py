"""The taskiq middleware with taskiq's InMemoryBroker: producer and worker in this process.

`await_inplace` runs each task inside its `kiq`, before `post_send`, so the worker side
always finds the job missing and records `submitted` itself: the path a kick from a
process without the middleware takes. The end-to-end tests with a real broker and
worker are in tests/test_taskiq_middleware.py.
"""

from __future__ import annotations

import asyncio

import pydantic
import pytest
from taskiq import Context, InMemoryBroker, SimpleRetryMiddleware, SmartRetryMiddleware, TaskiqDepends

from jobtrail.eventlog import EventLog
from jobtrail.index import JobIndex
from jobtrail.taskiq import JobtrailMiddleware, job_context
from jobtrail.workers.context import JobContext
from jobtrail.workers.taskiq_json import as_json
from tests.support.redis_server import RedisServer


def in_memory(*middlewares) -> InMemoryBroker:
    broker = InMemoryBroker(await_inplace=True)
    broker.add_middlewares(*middlewares)
    return broker


async def test_the_middleware_refuses_to_start_before_a_retry_middleware(events: EventLog):
    broker = in_memory(JobtrailMiddleware(events=events), SimpleRetryMiddleware())
    with pytest.raises(ValueError, match=r"after SimpleRetryMiddleware.*add_middlewares\(SimpleRetryMiddleware"):
        await broker.startup()


async def test_without_a_redis_url_the_middleware_says_what_it_needs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ValueError, match="pass redis_url= or set REDIS_URL"):
        JobtrailMiddleware()


async def test_arguments_over_the_params_limit_are_a_note(events: EventLog, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JOBTRAIL_MAX_PARAMS_BYTES", "100")
    broker = in_memory(JobtrailMiddleware(events=events))

    @broker.task
    async def store(blob: str) -> int:
        return len(blob)

    await broker.startup()
    task = await store.kiq("x" * 200)
    assert (await task.wait_result()).return_value == 200  # the task got its argument whole
    job = await events.state(task.task_id)
    assert job.params == {"note": "the arguments took 225 bytes as JSON, over the limit of 100"}
    assert job.state == "succeeded"


async def test_a_return_value_that_is_not_json_is_a_note_and_the_task_still_returns_it(events: EventLog):
    broker = in_memory(JobtrailMiddleware(events=events))

    @broker.task
    async def root_of_minus_one() -> complex:
        return 1j

    await broker.startup()
    task = await root_of_minus_one.kiq()
    assert (await task.wait_result()).return_value == 1j
    job = await events.state(task.task_id)
    assert job.state == "succeeded"
    assert job.result == {"note": "the return value did not encode as JSON (TypeError: complex has no JSON form)"}


async def test_a_tenants_middleware_makes_jobs_of_that_tenant_listed_for_it(events: EventLog):
    broker = in_memory(SmartRetryMiddleware(default_retry_count=4), JobtrailMiddleware(events=events, tenant="acme"))

    @broker.task(retry_on_error=True)
    async def hello(name: str) -> str:
        return f"hello {name}"

    await broker.startup()
    task = await hello.kiq(name="ada")
    await task.wait_result()
    job = await events.state(task.task_id)
    assert (job.tenant, job.params, job.max_attempts, job.result) == (
        "acme", {"args": [], "kwargs": {"name": "ada"}}, 4, "hello ada",
    )
    listed, _ = await JobIndex(events.redis, events.keys).page(limit=10, tenant="acme")
    assert [j.id for j in listed] == [task.task_id]


async def test_a_task_id_that_cannot_be_a_job_id_runs_unobserved(events: EventLog, caplog: pytest.LogCaptureFixture):
    broker = in_memory(JobtrailMiddleware(events=events))

    @broker.task
    async def add(a: int, b: int) -> int:
        return a + b

    await broker.startup()
    task = await add.kicker().with_task_id("a/b").kiq(1, 2)
    assert (await task.wait_result()).return_value == 3
    assert "task id 'a/b' cannot be a jobtrail job id" in caplog.text
    assert await events.redis.keys(f"{events.keys.prefix}:*") == []


async def test_a_task_that_requeues_itself_is_one_attempt_ended_by_its_next_delivery(events: EventLog):
    broker = in_memory(JobtrailMiddleware(events=events))

    @broker.task
    async def twice(context: Context = TaskiqDepends()) -> str:
        if "X-Taskiq-requeue" not in context.message.labels:
            await context.requeue()  # sends the message again and raises NoResultError
        return "second delivery"

    await broker.startup()
    task = await twice.kiq()
    assert (await task.wait_result()).return_value == "second delivery"
    history = [event async for event in events.events(task.task_id)]
    assert [(e.type, e.attempt) for e in history] == [("submitted", 0), ("started", 1), ("succeeded", 1)]
    assert history[-1].data == {"result": "second delivery"}


async def test_redis_failing_mid_task_loses_its_later_events_but_not_the_task(
    durable_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
):
    middleware = JobtrailMiddleware(durable_redis.url, prefix=prefix)
    broker = in_memory(middleware)
    broker.await_inplace = False  # kiq returns while the task runs
    go_on = asyncio.Event()

    @broker.task
    async def halves(ctx: JobContext = TaskiqDepends(job_context)) -> int:
        await ctx.progress(0.5, "half")
        await go_on.wait()
        await ctx.progress(1.0, "all")  # Redis is down: dropped, and no exception
        return 7

    await broker.startup()
    task = await halves.kiq()
    async with asyncio.timeout(10):
        while (await middleware.events.redis.hget(middleware.events.keys.job(task.task_id), "progress")) != "0.5":
            await asyncio.sleep(0.02)
    durable_redis.kill()
    go_on.set()
    assert (await task.wait_result(timeout=10)).return_value == 7

    durable_redis.start()  # on its append-only file: what it took before it died is there
    job = await middleware.events.state(task.task_id)
    assert (job.state, job.progress, job.message) == ("running", 0.5, "half")
    assert f"job {task.task_id}: progress not written" in caplog.text
    assert "the outcome not recorded, Redis failed" in caplog.text
    await broker.shutdown()


class Point(pydantic.BaseModel):
    x: int
    y: int


def test_values_are_json_or_a_note_saying_why_not():
    assert as_json({"when": (1, 2), "where": Point(x=1, y=2)}, "it", 100) == {"when": [1, 2], "where": {"x": 1, "y": 2}}
    assert as_json(object(), "it", 100) == {
        "note": "it did not encode as JSON (TypeError: object has no JSON form)"
    }
    assert as_json("x" * 10, "it", 5) == {"note": "it took 12 bytes as JSON, over the limit of 5"}

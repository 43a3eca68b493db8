"""The job runner and handler context, in-process against real Redis (no broker)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from redis.asyncio import Connection, Redis

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, State, SubmittedData
from jobtrail.lease import _SCRIPT as LEASE_SCRIPT
from jobtrail.registry import _KINDS, Kind, validate_params
from jobtrail.workers.context import JobContext, PermanentFailure
from jobtrail.workers.runner import Runner
from tests.support.redis_server import RedisServer


async def submit(events, job_id, params, kind="demo", max_attempts=3):
    data = SubmittedData(kind=kind, params=validate_params(kind, params), max_attempts=max_attempts)
    await events.append(job_id, EventType.SUBMITTED, data)


async def types_of(events, job_id):
    return [(e.type.value, e.attempt) async for e in events.events(job_id)]


@pytest.fixture
def runner(events, settings):
    return Runner(events, settings, name="test-worker")


async def test_successful_run_emits_started_progress_and_succeeded(events, runner):
    await submit(events, "j", {"steps": 3, "delay_ms": 0})
    await runner.run("j")
    assert await types_of(events, "j") == [
        ("submitted", 0), ("started", 1), ("progress", 1), ("progress", 1), ("progress", 1), ("succeeded", 1)
    ]
    job = await events.state("j")
    assert (job.state, job.progress, job.result, job.attempt) == (State.SUCCEEDED, 1.0, {"steps": 3}, 1)


async def test_failing_job_retries_with_backoff_then_fails_when_attempts_run_out(events, runner):
    await submit(events, "j", {"steps": 3, "delay_ms": 0, "fail_at_step": 2}, max_attempts=2)
    await runner.run("j")
    history = [e async for e in events.events("j")]
    assert [(e.type.value, e.attempt) for e in history] == [
        ("submitted", 0), ("started", 1), ("progress", 1), ("retrying", 1),
        ("started", 2), ("progress", 2), ("failed", 2),
    ]
    retrying = history[3].data
    assert retrying["error"]["type"] == "DemoFailure" and retrying["next_attempt"] == 2
    assert retrying["delay_s"] == runner.backoff_s(1)
    job = await events.state("j")
    assert job.state is State.FAILED and job.error["type"] == "DemoFailure"


async def test_backoff_doubles_and_is_capped(runner, settings):
    assert runner.backoff_s(1) == settings.retry_base_s
    assert runner.backoff_s(2) == 2 * settings.retry_base_s
    assert runner.backoff_s(30) == settings.retry_max_s


async def test_cancel_requested_while_running_stops_the_handler_at_its_next_progress(events, runner):
    await submit(events, "j", {"steps": 1000, "delay_ms": 5})
    task = asyncio.create_task(runner.run("j"))
    while (await events.state("j")).progress < 0.01:
        await asyncio.sleep(0.01)
    await events.append("j", EventType.CANCEL_REQUESTED, {"reason": "enough"})
    await asyncio.wait_for(task, 5)
    job = await events.state("j")
    assert job.state is State.CANCELLED and job.progress < 0.5


async def test_pending_job_with_a_cancel_request_is_cancelled_without_starting(events, runner):
    await submit(events, "j", {"steps": 1})
    await events.append("j", EventType.CANCEL_REQUESTED, {})
    await runner.run("j")
    assert [t for t, _ in await types_of(events, "j")] == ["submitted", "cancel_requested", "cancelled"]


async def test_job_found_running_on_delivery_is_retried_as_stalled(events, runner):
    await submit(events, "j", {"steps": 2, "delay_ms": 0})
    await events.append("j", EventType.STARTED, {"worker": "dead", "attempt": 1}, attempt=1, key="started:1")
    await runner.run("j")
    history = [e async for e in events.events("j")]
    assert [e.type.value for e in history][:4] == ["submitted", "started", "retrying", "started"]
    assert history[2].data["error"]["type"] == "Stalled"
    assert (await events.state("j")).state is State.SUCCEEDED


async def test_concurrent_deliveries_of_one_job_start_it_once(events, settings):
    await submit(events, "j", {"steps": 5, "delay_ms": 10})
    runners = [Runner(events, settings, name=f"w{i}") for i in range(3)]
    await asyncio.gather(*(r.run("j") for r in runners))
    assert [t for t, _ in await types_of(events, "j")].count("started") == 1
    assert (await events.state("j")).state is State.SUCCEEDED


async def test_terminal_or_deleted_job_is_not_run_again(events, runner):
    await submit(events, "j", {"steps": 1, "delay_ms": 0})
    await runner.run("j")
    before = await types_of(events, "j")
    await runner.run("j")
    await runner.run("missing")
    assert await types_of(events, "j") == before


async def test_permanent_failure_skips_the_remaining_attempts(events, runner):
    class NoParams(msgspec.Struct):
        pass

    async def refuse(params, ctx):
        raise PermanentFailure("input is unusable")

    _KINDS["test.permanent"] = Kind("test.permanent", NoParams, refuse)
    try:
        await submit(events, "j", {}, kind="test.permanent", max_attempts=5)
        await runner.run("j")
    finally:
        del _KINDS["test.permanent"]
    assert [t for t, _ in await types_of(events, "j")] == ["submitted", "started", "failed"]
    assert (await events.state("j")).error == {"type": "PermanentFailure", "message": "input is unusable"}


async def test_progress_is_coalesced_but_phase_changes_and_completion_are_kept(events):
    await submit(events, "j", {"steps": 1})
    await events.append("j", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    ctx = JobContext(events, "j", 1, min_interval_s=60)
    for i in range(100):
        await ctx.progress(i / 200, phase="collect" if i < 50 else "render")
    await ctx.progress(1.0)
    written = [e.data async for e in events.events("j") if e.type is EventType.PROGRESS]
    assert [(d["progress"], d.get("phase")) for d in written] == [(0.0, "collect"), (0.25, "render"), (1.0, None)]


async def test_a_handler_reporting_in_a_tight_loop_lets_the_loop_run_and_loses_no_report(events):
    # A batched context yields to the loop at most every YIELD_EVERY_S, not at each report:
    # other tasks still run while the handler never awaits anything else, and every report
    # lands, in order, in fewer round trips than reports.
    await submit(events, "j", {"steps": 1})
    await events.append("j", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    ctx = JobContext(events, "j", 1, min_interval_s=0, batched=True)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started, loop = ticks, asyncio.get_running_loop()
    for step in range(1, 301):
        until = loop.time() + 0.0002  # a fifth of a millisecond of the handler's own work
        while loop.time() < until:
            pass
        await ctx.progress(step / 400, current=step)
    during = ticks - started
    await ctx.close()
    other.cancel()
    written = [e.data["current"] async for e in events.events("j") if e.type is EventType.PROGRESS]
    assert written == list(range(1, 301))
    assert during >= 5, "60 ms of reporting in a tight loop must let other tasks run"
    assert during < 300, "one turn of the loop per report is what the context avoids"


async def test_progress_held_back_is_written_when_the_interval_ends(events):
    await submit(events, "j", {"steps": 1})
    await events.append("j", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    ctx = JobContext(events, "j", 1, min_interval_s=0.2)
    for fraction in (0.1, 0.2, 0.3):
        await ctx.progress(fraction)  # 0.1 is written; 0.2 and 0.3 are held back
    assert (await events.state("j")).progress == 0.1
    await asyncio.sleep(0.4)  # the handler goes quiet
    assert (await events.state("j")).progress == 0.3
    written = [e.data["progress"] async for e in events.events("j") if e.type is EventType.PROGRESS]
    assert written == [0.1, 0.3]
    # A whole interval after 0.3 was written, however late a loaded machine ran that write.
    await asyncio.sleep(0.2)
    await ctx.progress(0.35)  # the interval has passed: written at once
    await ctx.progress(0.4)  # held back
    await ctx.close()  # the attempt ends: what is held is dropped, nothing is written later
    await asyncio.sleep(0.4)
    written = [e.data["progress"] async for e in events.events("j") if e.type is EventType.PROGRESS]
    assert written == [0.1, 0.3, 0.35]


async def test_context_phase_and_log_are_recorded(events):
    await submit(events, "j", {"steps": 1})
    await events.append("j", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    ctx = JobContext(events, "j", 1, min_interval_s=0.1)
    await ctx.phase("render", "drawing pages")
    await ctx.log("page 1 done", level="debug")
    history = [(e.type.value, e.data) async for e in events.events("j")][2:]
    assert history == [
        ("phase", {"phase": "render", "message": "drawing pages"}),
        ("log", {"level": "debug", "message": "page 1 done"}),
    ]
    assert (await events.state("j")).phase == "render"


async def test_delivery_of_a_job_whose_lease_is_held_is_dropped(events, runner, redis_client, keys):
    await submit(events, "j", {"steps": 1, "delay_ms": 0})
    await redis_client.set(keys.lease("j"), "other-worker", px=5000)
    await runner.run("j")
    assert [t for t, _ in await types_of(events, "j")] == ["submitted"]
    assert await redis_client.get(keys.lease("j")) == "other-worker", "someone else's lease is left alone"


async def test_handler_stops_without_writing_when_its_lease_is_taken_over(events, settings, redis_client, keys):
    quick = msgspec.structs.replace(settings, lease_ttl_s=0.3)
    await submit(events, "j", {"steps": 1000, "delay_ms": 5})
    task = asyncio.create_task(Runner(events, quick, name="slow").run("j"))
    while (await events.state("j")).progress < 0.01:
        await asyncio.sleep(0.01)
    await redis_client.set(keys.lease("j"), "new-holder", px=5000)
    await asyncio.wait_for(task, 5)
    job = await events.state("j")
    assert job.state is State.RUNNING, "the abandoned attempt must not end the job for its new holder"
    assert await redis_client.get(keys.lease("j")) == "new-holder"


async def test_lease_is_released_when_the_job_ends(events, runner, redis_client, keys):
    await submit(events, "j", {"steps": 1, "delay_ms": 0})
    await runner.run("j")
    assert await redis_client.exists(keys.lease("j")) == 0


async def test_two_contexts_of_one_attempt_do_not_take_each_others_reports_for_repeats(events):
    # A taskiq redelivery carries on with the same attempt in a new context; each report
    # has an idempotency key, and the second context's must not collide with the first's.
    await submit(events, "j", {})
    await events.append("j", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    first, second = (JobContext(events, "j", 1, min_interval_s=0.0) for _ in range(2))
    await first.phase("collect")
    await second.phase("render")
    assert [t for t, _ in await types_of(events, "j")] == ["submitted", "started", "phase", "phase"]


class RoundTrips(Connection):
    """A real connection that counts what it sends: one write is one round trip (a pipeline is one).

    Counted at its socket's writer: the runner's shared round trips write there directly
    (workers/wire.py), not through `send_packed_command`.
    """

    sent = 0

    async def _connect(self):
        await super()._connect()
        writelines = self._writer.writelines

        def counted(data):
            RoundTrips.sent += 1
            writelines(data)

        self._writer.writelines = counted


@pytest.fixture
def trivial_kind():
    class NoParams(msgspec.Struct):
        pass

    async def nothing(params, ctx):
        return {}

    _KINDS["test.trivial"] = Kind("test.trivial", NoParams, nothing)
    yield "test.trivial"
    del _KINDS["test.trivial"]


async def test_a_trivial_job_takes_two_round_trips_from_lease_to_release_and_a_share_of_one(
    redis_url, settings, keys, trivial_kind
):
    client = Redis.from_url(redis_url, decode_responses=True, connection_class=RoundTrips)
    try:
        events = EventLog(client, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)
        # The interval `started`'s feed entry may wait for the outcome to take it along.
        runner = Runner(events, msgspec.structs.replace(settings, progress_interval_s=5.0), name="test-worker")
        await client.script_load(LEASE_SCRIPT)  # loaded once per Redis: not this job's cost
        await submit(events, "j", {}, kind=trivial_kind)
        RoundTrips.sent = 0
        await runner.run("j")
        assert RoundTrips.sent == 2, "ZADD + lease, started and load; succeeded + lease release"
        await runner.trailer.flush()
        assert RoundTrips.sent == 3, "then the feed entries + ZREM: the trailer's, which deliveries share"
        assert [t for t, _ in await types_of(events, "j")] == ["submitted", "started", "succeeded"]
        assert await client.exists(keys.lease("j")) == 0
        assert await client.zscore(keys.live(), "j") is None
        feed = [(t.type, t.job_id) for t in await events.activity.reader(None).page()]
        assert feed[-2:] == [("started", "j"), ("succeeded", "j")]
    finally:
        await client.aclose()


@pytest.fixture
def reporting_kind():
    class NoParams(msgspec.Struct):
        pass

    async def report(params, ctx):
        await ctx.progress(0.5, "halfway")
        return {}

    _KINDS["test.reporting"] = Kind("test.reporting", NoParams, report)
    yield "test.reporting"
    del _KINDS["test.reporting"]


async def test_concurrent_jobs_reports_share_the_runners_round_trips(redis_url, settings, keys, reporting_kind):
    client = Redis.from_url(redis_url, decode_responses=True, connection_class=RoundTrips)
    try:
        events = EventLog(client, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)
        runner = Runner(events, msgspec.structs.replace(settings, progress_interval_s=0.0), name="test-worker")
        await client.script_load(LEASE_SCRIPT)
        jobs = [f"j{n}" for n in range(10)]
        for job_id in jobs:
            await submit(events, job_id, {}, kind=reporting_kind)
        await runner.run(jobs[0])  # the scripts are loaded: what follows is the jobs' own cost
        RoundTrips.sent = 0
        await asyncio.gather(*(runner.run(job_id) for job_id in jobs[1:]))
        # Nine jobs each write a start, a report and an outcome: alone, the reports would be
        # nine round trips more; shared, the nine jobs' every step goes out together.
        assert RoundTrips.sent <= 6
        for job_id in jobs:
            assert [t for t, _ in await types_of(events, job_id)] == ["submitted", "started", "progress", "succeeded"]
    finally:
        await client.aclose()


async def test_a_long_jobs_started_reaches_the_feed_while_it_runs(events, settings, redis_client, keys):
    runner = Runner(events, msgspec.structs.replace(settings, progress_interval_s=0.05), name="test-worker")
    await submit(events, "j", {"steps": 1, "delay_ms": 3000})
    task = asyncio.create_task(runner.run("j"))
    try:
        async def started_in_feed():
            while not any(t.type == "started" and t.job_id == "j" for t in await events.activity.reader(None).page()):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(started_in_feed(), 2.5)
        assert (await events.state("j")).state is State.RUNNING
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lease_is_released_on_a_redis_that_never_loaded_its_script(tmp_path, settings, keys, trivial_kind):
    # A fresh server: the release, queued by its SHA behind the outcome, answers NOSCRIPT.
    server = RedisServer(tmp_path / "redis").start()
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        events = EventLog(client, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)
        await submit(events, "j", {}, kind=trivial_kind)
        await Runner(events, settings, name="test-worker").run("j")
        assert (await events.state("j")).state is State.SUCCEEDED
        assert await client.exists(keys.lease("j")) == 0
    finally:
        await client.aclose()
        server.kill()

"""The reaper: stalled and lost jobs are queued again, in-process against real Redis and end to end."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from datetime import datetime

import msgspec
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from jobtrail.artifacts import ArtifactStore
from jobtrail.events import EventType, SubmittedData
from jobtrail.index import JobIndex
from jobtrail.livejobs import LiveJobs, now_ms
from jobtrail.registry import validate_params
from jobtrail.service import JobService
from jobtrail.workers.queue import group_name
from jobtrail.workers.reaper import Reaper
from jobtrail.workers.runner import Runner
from tests.support.api import history, status, submit, wait_for_state
from tests.support.topologies import over_topologies
from tests.support.worker_procs import Workers

# Every test on one server, a Sentinel group and a Cluster: the live set, the queue and the
# reaper's lock are single keys, a job's keys share a slot.
pytestmark = over_topologies

LATER_MS = 3_600_000  # a pass this far ahead finds every tracked job due and stale


@pytest.fixture
def settings(settings):
    # Short enough for the end-to-end tests to wait out a dead worker's lease.
    return msgspec.structs.replace(settings, lease_ttl_s=1.0, reaper_interval_s=0.5)


@pytest.fixture
async def group(redis_client, keys):
    """The workers' consumer group, as a worker declares it."""
    name = group_name(keys)
    await redis_client.xgroup_create(keys.queue(), name, id="0", mkstream=True)
    return name


@pytest.fixture
def queued():
    return []


@pytest.fixture
def reaper(events, settings, group, queued):
    async def requeue(job_id):
        queued.append(job_id)

    return Reaper(events, requeue, settings, group=group, name="reaper-1")


@pytest.fixture
def live(events, settings):
    return LiveJobs(events.redis, events.keys, settings.pending_stale_s)


async def submitted(events, live, job_id, steps=2, delay_ms=0):
    """A job as the API leaves it: `submitted` written and tracked (whether or not it was queued)."""
    params = validate_params("demo", {"steps": steps, "delay_ms": delay_ms})
    data = SubmittedData(kind="demo", params=params, max_attempts=3)
    await events.append(job_id, EventType.SUBMITTED, data)
    await live.track(job_id)


async def test_running_job_whose_worker_died_is_queued_again_and_retried_as_stalled(
    events, live, reaper, queued, settings, redis_client, keys, caplog
):
    await submitted(events, live, "j")
    await events.append("j", EventType.STARTED, {"worker": "dead", "attempt": 1}, attempt=1, key="started:1")

    with caplog.at_level(logging.WARNING, logger="jobtrail.workers.reaper"):
        assert await reaper.reap(now_ms() + LATER_MS) == ["j"]

    assert queued == ["j"]
    assert any("j" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    runner = Runner(events, settings, name="next")
    await runner.run("j")  # the delivery of the new message
    got = [e async for e in events.events("j")]
    assert [e.type.value for e in got if e.type is not EventType.PROGRESS] == [
        "submitted", "started", "retrying", "started", "succeeded"
    ]
    assert got[2].data["error"]["type"] == "Stalled"
    await runner.trailer.flush()  # the live set's ZREM follows the delivery, with other deliveries'
    assert await redis_client.zscore(keys.live(), "j") is None, "a finished job leaves the live set"


async def test_pending_job_whose_enqueue_was_lost_is_queued_again_once_stale(events, live, reaper, queued, settings):
    await submitted(events, live, "j")
    stale_ms = int(settings.pending_stale_s * 1000)

    assert await reaper.reap() == [], "a fresh job is not due yet"
    at = now_ms() + stale_ms + 1000
    assert await reaper.reap(at) == ["j"]
    assert await reaper.reap(at) == [], "queued again at most once per pending_stale_s"
    assert await reaper.reap(at + stale_ms) == ["j"]

    await Runner(events, settings, name="next").run("j")
    assert (await events.state("j")).state == "succeeded"


async def test_job_whose_enqueue_failed_at_submission_is_queued_by_the_reaper(events, reaper, queued, settings):
    async def broken_enqueue(job_id):
        raise RedisConnectionError("the queue is unreachable")

    service = JobService(events, JobIndex(events.redis, events.keys), broken_enqueue, settings,
                         ArtifactStore(settings.artifact_dir))
    with pytest.raises(RedisConnectionError):
        await service.submit("demo", {"steps": 1}, None)
    (job_id,) = await events.redis.zrange(events.keys.index(), 0, -1)

    assert await reaper.reap(now_ms() + LATER_MS) == [job_id]


async def test_job_whose_submission_died_right_after_its_append_is_queued_by_the_reaper(
    events, reaper, queued, settings
):
    class DyingIndex(JobIndex):
        def queue_add(self, pipe, job_id, created_ms, tenant=None):
            raise RedisConnectionError("the API lost Redis (or died) right after the append")

    async def enqueue(job_id):
        queued.append(("enqueued by the API", job_id))

    service = JobService(events, DyingIndex(events.redis, events.keys), enqueue, settings,
                         ArtifactStore(settings.artifact_dir))
    with pytest.raises(RedisConnectionError):
        await service.submit("demo", {"steps": 1}, None, idempotency_key="k")
    job_id = await service.job_id_for("k")
    assert (await events.state(job_id)).state == "pending" and queued == []

    assert await reaper.reap(now_ms() + LATER_MS) == [job_id]


async def test_pending_job_holding_its_lease_between_attempts_is_left_alone(
    events, live, reaper, queued, redis_client, keys
):
    await submitted(events, live, "j")
    await redis_client.set(keys.lease("j"), "sleeping-runner", px=5000)
    at = now_ms() + LATER_MS

    assert await reaper.reap(at) == []

    assert queued == []
    due = await redis_client.zscore(keys.live(), "j")
    assert at + 4000 < due <= at + 5000, "looked at again when the lease expires"


async def test_stale_pending_job_waits_while_the_queue_has_unread_messages(
    events, live, reaper, queued, redis_client, keys, group
):
    await submitted(events, live, "j")
    await redis_client.xadd(keys.queue(), {"data": "a message no worker has read"})
    at = now_ms() + LATER_MS

    assert await reaper.reap(at) == [], "a backlog may be why it waits; do not add to it"

    await redis_client.xreadgroup(group, "w", {keys.queue(): ">"})
    assert await reaper.reap(at + LATER_MS) == ["j"]


async def test_the_queue_is_trimmed_of_acknowledged_messages_only(reaper, redis_client, keys, group):
    ids = [await redis_client.xadd(keys.queue(), {"data": str(n)}) for n in range(6)]
    await redis_client.xreadgroup(group, "w", {keys.queue(): ">"}, count=4)  # 0..3 read
    await redis_client.xack(keys.queue(), group, ids[0], ids[2], ids[3])  # 1 still pending

    await reaper.trim_queue()

    # 0 went; 1 is unacknowledged, and 4 and 5 unread, so they and everything after stay.
    assert [entry_id for entry_id, _ in await redis_client.xrange(keys.queue())] == ids[1:]
    await redis_client.xack(keys.queue(), group, ids[1])
    await reaper.trim_queue()
    assert [entry_id for entry_id, _ in await redis_client.xrange(keys.queue())] == ids[3:]


async def test_trimming_a_queue_that_does_not_exist_yet_does_nothing(events, settings, queued):
    async def requeue(job_id):
        queued.append(job_id)

    assert await Reaper(events, requeue, settings, group="nobody", name="r").trim_queue() == 0


async def test_finished_and_missing_jobs_are_dropped_from_the_live_set(
    events, live, reaper, queued, redis_client, keys
):
    await submitted(events, live, "done")
    await events.append("done", EventType.CANCELLED, {})
    await live.track("gone")

    assert await reaper.reap(now_ms() + LATER_MS) == []

    assert queued == []
    assert await redis_client.zcard(keys.live()) == 0


async def test_only_one_worker_reaps_per_interval(events, settings, group, monkeypatch):
    async def requeue(job_id):
        pass

    reapers = [Reaper(events, requeue, settings, group=group, name=f"worker-{n}") for n in range(3)]
    assert sorted([await r.claim_pass() for r in reapers]) == [False, False, True]
    await events.redis.delete(events.keys.reaper_lock())
    passes = []

    async def counted(at_ms=None, **_):
        passes.append(time.monotonic())
        return []

    for r in reapers:
        monkeypatch.setattr(r, "reap", counted)

    loops = [asyncio.create_task(r.run()) for r in reapers]
    await asyncio.sleep(5 * settings.reaper_interval_s)
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)

    assert 2 <= len(passes) <= 5, passes  # about one per interval, not one per worker and tick
    gaps = [b - a for a, b in itertools.pairwise(passes)]
    assert min(gaps) >= settings.reaper_interval_s * 0.9, gaps


async def test_a_failing_pass_is_logged_and_the_loop_goes_on(events, settings, group, monkeypatch, caplog):
    async def requeue(job_id):
        pass

    reaper = Reaper(events, requeue, msgspec.structs.replace(settings, reaper_interval_s=0.1), group=group, name="w")
    calls = []

    async def flaky(at_ms=None, **_):
        calls.append(at_ms)
        if len(calls) == 1:
            raise RedisConnectionError("Redis went away")
        return []

    monkeypatch.setattr(reaper, "reap", flaky)
    loop = asyncio.create_task(reaper.run())
    with caplog.at_level(logging.WARNING, logger="jobtrail.workers.reaper"):
        deadline = time.monotonic() + 5
        while len(calls) < 2:
            assert time.monotonic() < deadline, "the loop stopped after an error"
            await asyncio.sleep(0.05)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)

    failure = next(r for r in caplog.records if r.name == "jobtrail.workers.reaper")
    assert failure.levelno == logging.WARNING and failure.exc_info is not None


async def test_runner_schedules_the_first_look_at_a_job_for_when_its_lease_could_expire(
    events, live, settings, redis_client, keys
):
    await submitted(events, live, "j", steps=20, delay_ms=20)
    task = asyncio.create_task(Runner(events, settings, name="w").run("j"))
    while (await events.state("j")).state != "running":
        await asyncio.sleep(0.01)

    due = await redis_client.zscore(keys.live(), "j")

    assert due <= now_ms() + settings.lease_ttl_s * 1000, "not pending_stale_s after submission"
    await asyncio.wait_for(task, 10)


# --- end to end ---


@pytest.fixture
def workers(settings, tmp_path):
    started = Workers(settings, tmp_path)
    yield started
    started.close()


@pytest.mark.e2e
async def test_job_of_a_killed_worker_on_an_idle_queue_is_finished_by_another_worker(client, workers, settings):
    first = await workers.start()
    job_id = await submit(client, {"steps": 40, "delay_ms": 100})
    deadline = time.monotonic() + 10
    while (await status(client, job_id))["progress"] == 0:
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.05)
    await workers.start()

    os.kill(first.process.pid, signal.SIGKILL)
    killed_ms = now_ms()

    job = await wait_for_state(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=15)
    assert job["state"] == "succeeded"
    events = await history(client, job_id)
    assert [e["type"] for e in events if e["type"] != "progress"] == [
        "submitted", "started", "retrying", "started", "succeeded"
    ]
    retrying = next(e for e in events if e["type"] == "retrying")
    assert retrying["data"]["error"]["type"] == "Stalled"
    bound_s = settings.lease_ttl_s + 1.5 * settings.reaper_interval_s + settings.retry_base_s
    took_s = datetime.fromisoformat(retrying["at"]).timestamp() - killed_ms / 1000
    assert took_s <= bound_s + 1.5, f"recovered {took_s:.2f}s after the kill; bound {bound_s}s"
    assert len({e["id"] for e in events}) == len(events)
    seen = [(e["type"], e["attempt"], msgspec.json.encode(e["data"])) for e in events]
    assert len(set(seen)) == len(seen), "an event was written twice"


@pytest.mark.e2e
async def test_delivery_again_of_a_job_still_running_drops_itself(client, workers, settings):
    # taskiq-redis claims a message idle longer than this whenever a read brings new ones.
    worker = await workers.start(JOBTRAIL_BROKER_IDLE_MS="300")
    job_id = await submit(client, {"steps": 20, "delay_ms": 100})
    deadline = time.monotonic() + 10
    while (await status(client, job_id))["progress"] < 0.2:
        assert time.monotonic() < deadline, "the job never got going"
        await asyncio.sleep(0.05)

    await submit(client, {"steps": 1, "delay_ms": 0})  # a read with a new message: the claim happens

    job = await wait_for_state(client, job_id, {"succeeded", "failed", "cancelled"})
    assert job["state"] == "succeeded"
    assert [e["type"] for e in await history(client, job_id) if e["type"] != "progress"] == [
        "submitted", "started", "succeeded"
    ]
    assert f"job {job_id} is being run by another worker; dropping this delivery" in worker.output()


async def test_a_pass_puts_back_on_the_queue_the_messages_a_dead_worker_read(
    events, settings, group, redis_client, keys
):
    async def requeue(job_id):
        raise AssertionError("the message goes back as it is, not as a new run")

    reaper = Reaper(events, requeue, msgspec.structs.replace(settings, broker_idle_ms=20), group=group, name="reaper-1")
    await redis_client.xadd(keys.queue(), {"data": "a message its worker read, then died"})
    await redis_client.xreadgroup(group, "died", {keys.queue(): ">"})
    assert await reaper.reclaim_messages() == 0, "not idle for long enough yet"
    await asyncio.sleep(0.05)

    assert await reaper.reclaim_messages() == 1
    assert (await redis_client.xpending(keys.queue(), group))["pending"] == 0
    [(_, [(_, fields)])] = await redis_client.xreadgroup(group, "alive", {keys.queue(): ">"})
    assert fields == {"data": "a message its worker read, then died"}

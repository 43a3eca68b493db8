"""Redis away for a few seconds while a job runs: the job rides it out and spends no attempt.

Each test runs a real `jobtrail worker` against a throwaway redis-server (never the
shared one), starts a job with `max_attempts` 1, and takes Redis away in one of the ways
it goes away in production: restarted (on its append-only file), frozen, demoted to a
read-only replica, over `maxmemory`. Each outage outlasts the worker's lease (2 s), so
the reaper's takeover of a lapsed lease is tried too. The job must succeed at attempt 1.

The restart runs on a Sentinel group and a Cluster too, as the whole group's data servers
stopped (data saved) and started again (tests/support/topologies.py, WholeGroupDown); the
other outages are one server's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.jobstate import JobState, state_fields
from jobtrail.keys import Keys
from jobtrail.reducer import fold
from jobtrail.store import Store
from tests.support.redis_server import RedisServer, free_port
from tests.support.topologies import WholeGroupDown
from tests.support.worker_procs import Workers

pytestmark = pytest.mark.e2e

JOB = {"kind": "demo", "params": {"steps": 30, "delay_ms": 200}, "max_attempts": 1}


@pytest.fixture
def server(redis_to_take_down: RedisServer | WholeGroupDown) -> RedisServer | WholeGroupDown:
    return redis_to_take_down


@pytest.fixture
def settings(settings, server):
    return msgspec.structs.replace(
        settings, redis_url=server.url, redis_timeout_s=1.0, lease_ttl_s=2.0, reaper_interval_s=0.5,
        pending_stale_s=2.0, redis_outage_s=30.0,
    )


@pytest.fixture
def workers(settings, tmp_path):
    started = Workers(settings, tmp_path)
    yield started
    started.close()


async def restart(server: RedisServer | WholeGroupDown, admin: aioredis.Redis) -> None:
    server.kill()
    await asyncio.sleep(4)
    server.start()  # the same port and directory: it loads its append-only file


async def freeze(server: RedisServer, admin: aioredis.Redis) -> None:
    # What `DEBUG SLEEP 7` does: the process answers nothing, connections stay open.
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(7)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def read_only(server: RedisServer, admin: aioredis.Redis) -> None:
    # A replica of a primary that never answers keeps its data and refuses every write.
    await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    try:
        await asyncio.sleep(8)
    finally:
        await admin.execute_command("REPLICAOF", "NO", "ONE")


async def over_maxmemory(server: RedisServer, admin: aioredis.Redis) -> None:
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    try:
        await asyncio.sleep(8)
    finally:
        await admin.config_set("maxmemory", "0")


async def state_after_outage(events: EventLog, job_id: str) -> JobState:
    """The job's state, read again while this client's connection from before the outage fails."""
    for _ in range(20):
        try:
            return await events.state(job_id)
        except RedisError:
            await asyncio.sleep(0.2)
    return await events.state(job_id)


@pytest.mark.parametrize("outage", [restart, freeze, read_only, over_maxmemory], ids=lambda f: f.__name__)
async def test_a_job_with_one_attempt_rides_out_redis_going_away_and_succeeds_at_attempt_1(
    outage: Callable[[RedisServer, aioredis.Redis], Awaitable[None]], server, settings, start_api, workers
):
    admin = aioredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=2)
    await rides_out(outage, server, admin, settings, start_api, workers)


@pytest.mark.parametrize("topology", ["sentinel", "cluster"], indirect=True)
async def test_a_job_with_one_attempt_rides_out_a_whole_group_restarting_and_succeeds_at_attempt_1(
    topology, server, settings, start_api, workers
):
    await rides_out(restart, server, Store(settings, role="test").pooled(), settings, start_api, workers)


async def rides_out(outage: Callable[[Any, Any], Awaitable[None]], server: RedisServer | WholeGroupDown,
                    admin: aioredis.Redis, settings: Settings, start_api: Any, workers: Workers) -> None:
    """Start the job, take Redis away with `outage`, and check what the job came to (`admin` closed at the end)."""
    api = await start_api(settings)
    worker = await workers.start(JOBTRAIL_REDIS_TIMEOUT_S="1.0", JOBTRAIL_REDIS_OUTAGE_S="30")
    events = EventLog(admin, Keys(settings.prefix), settings.retention_s, activity_maxlen=settings.activity_maxlen)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            response = await http.post("/jobs", json=JOB)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            deadline = time.monotonic() + 15
            while (await events.state(job_id)).progress < 0.1:
                assert time.monotonic() < deadline, f"the job never got going; worker log:\n{worker.output()}"
                await asyncio.sleep(0.05)

            await outage(server, admin)

            deadline = time.monotonic() + 45
            while not (job := await state_after_outage(events, job_id)).terminal:
                assert time.monotonic() < deadline, f"not finished: {job}; worker log:\n{worker.output()}"
                await asyncio.sleep(0.2)
        history = [event async for event in events.events(job_id)]
        assert (job.state, job.attempt, job.error) == ("succeeded", 1, None), worker.output()
        assert [e.type.value for e in history if e.type.value != "progress"] == ["submitted", "started", "succeeded"]
        steps = [e.data["current"] for e in history if e.type.value == "progress"]
        assert steps == list(range(1, 31)), "every report once, in order: a retried one landed once"
        assert state_fields(await admin.hgetall(events.keys.job(job_id))) == fold(history)
        assert worker.process.poll() is None, "the worker is still running"
    finally:
        await admin.aclose()

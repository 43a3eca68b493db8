"""Redis SIGKILLed mid-run and restarted on its own files: nothing acknowledged is lost.

A throwaway redis-server with an append-only file fsynced on every write (the setting
that makes "acknowledged" mean "on disk"; ops/redis.conf uses `everysec`, which can lose
about the last second on a power loss, though not on a killed process). Real traffic runs
through it: the API taking submissions, real workers running them, and a writer
appending straight to one job's stream. Redis is killed in the middle and started again.
Every job must succeed at its first attempt: the workers wait the outage out.

On a Sentinel group and a Cluster too (`@over_topologies`), where the whole group's data
servers are stopped with their data saved and started again (tests/support/topologies.py,
WholeGroupDown).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import msgspec
import pytest
from redis.exceptions import RedisError

from jobtrail.eventlog import EventLog
from jobtrail.events import TERMINAL_STATES, EventType, State
from jobtrail.jobstate import state_fields
from jobtrail.keys import Keys
from jobtrail.reducer import fold
from jobtrail.store import Store
from tests.support.env import ROOT, worker_env
from tests.support.redis_server import RedisServer
from tests.support.topologies import WholeGroupDown, over_topologies
from tests.support.worker_procs import wait_until_listening

pytestmark = pytest.mark.e2e

JOBS = 12
LEDGER = "ledger"  # the job the direct writer appends to


@pytest.fixture
def server(redis_to_take_down: RedisServer | WholeGroupDown) -> RedisServer | WholeGroupDown:
    return redis_to_take_down


@pytest.fixture
def settings(settings, server):
    # Short leases and reaper passes, so jobs cut off by the outage are recovered quickly.
    return msgspec.structs.replace(
        settings, redis_url=server.url, redis_timeout_s=1.0, lease_ttl_s=2.0, reaper_interval_s=0.5,
        pending_stale_s=2.0,
    )


class Ledger:
    """Appends log events to one job until stopped, remembering each append Redis acknowledged."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.acknowledged: list[str] = []
        self.failed = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                appended = await self.events.append(LEDGER, EventType.LOG, {"level": "info", "message": f"line {n}"})
                self.acknowledged.append(appended.id)
            except RedisError:
                self.failed += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)


@over_topologies
async def test_every_acknowledged_write_survives_a_killed_and_restarted_redis(
    settings, server, start_api, start_worker, tmp_path, capsys
):
    api = await start_api(settings)
    workers = [start_worker(), start_worker()]
    for n in range(len(workers)):
        # Before the kill: a worker still starting finds no Redis and exits, and then
        # no worker is there to wait the outage out.
        await wait_until_listening(tmp_path / f"worker-{n}.log")
    redis = Store(settings, role="test").pooled()  # one server, the Sentinel master or the Cluster
    events = EventLog(redis, Keys(settings.prefix), settings.retention_s, activity_maxlen=settings.activity_maxlen)
    await events.append(LEDGER, EventType.SUBMITTED, {"kind": "demo", "params": {}, "max_attempts": 1})
    await events.append(LEDGER, EventType.STARTED, {"worker": "ledger", "attempt": 1}, attempt=1)
    ledger = Ledger(events)
    writing = asyncio.create_task(ledger.run())
    accepted: list[str] = []
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:

        async def submit(i: int) -> None:
            try:
                response = await http.post(
                    "/jobs", json={"kind": "demo", "params": {"steps": 8, "delay_ms": 100 + 20 * i}}
                )
            except httpx.TransportError:
                return
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            else:
                assert response.status_code == 503, response.text  # never a 500

        for i in range(JOBS // 2):
            await submit(i)
        await asyncio.sleep(1.0)  # jobs running, the ledger writing

        server.kill()  # SIGKILL, mid-everything
        for i in range(JOBS // 2, JOBS):
            await submit(i)  # 503s while it is down
        await asyncio.sleep(0.5)
        server.start()  # the same port and directory: it loads its append-only file

        for i in range(JOBS):
            await submit(i)
        await asyncio.sleep(1.0)
        ledger.stop.set()
        await writing

        job_ids = [key.split("{")[1].split("}")[0] async for key in redis.scan_iter(
            match=events.keys.events("*"), _type="stream")]
        deadline = time.monotonic() + 45
        while True:
            states = {job_id: (await events.state(job_id)).state for job_id in job_ids if job_id != LEDGER}
            if all(state in TERMINAL_STATES for state in states.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)

    # Every append Redis acknowledged is in the stream, in order, once.
    # (An append whose reply the kill cut off may be there too: written, never acknowledged.)
    ledger_ids = [event.id async for event in events.events(LEDGER) if event.type is EventType.LOG]
    acknowledged = set(ledger.acknowledged)
    assert [entry_id for entry_id in ledger_ids if entry_id in acknowledged] == ledger.acknowledged
    # Every job the API accepted exists and finished; none is stuck.
    assert set(accepted) <= set(states)
    stuck = {job_id: state for job_id, state in states.items() if state not in TERMINAL_STATES}
    assert not stuck, f"not finished after the restart: {stuck}"
    assert all(state is State.SUCCEEDED for job_id, state in states.items() if job_id in accepted)
    # The outage cost no job an attempt: its workers waited Redis out.
    attempts = {job_id: (await events.state(job_id)).attempt for job_id in states}
    assert set(attempts.values()) == {1}, f"attempts after the restart: {attempts}"
    # No stream holds an event twice, and every hash is the fold of its stream.
    duplicated = 0
    for job_id in states:
        history = [event async for event in events.events(job_id)]
        keys = [event.key for event in history if event.key]
        duplicated += len(keys) - len(set(keys))
        assert state_fields(await redis.hgetall(events.keys.job(job_id))) == fold(history), job_id
    assert duplicated == 0
    check = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "repair", "--check"], cwd=ROOT, env=worker_env(settings),
        capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(states) + 1} checked, 0 mismatched, 0 not repairable" in check.stdout

    for worker in workers:
        worker.terminate()
    await redis.aclose()
    with capsys.disabled():
        print(
            f"\nredis restart: {len(states)} jobs ({len(accepted)} accepted with 202, all succeeded at attempt 1), "
            f"{len(ledger.acknowledged)} acknowledged direct appends ({ledger.failed} refused while down), "
            f"lost 0, duplicates 0, stuck 0, repair --check: {len(states) + 1} jobs, 0 mismatched"
        )

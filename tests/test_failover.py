"""Failover under a running workload, on real processes: `jobtrail serve`, two `jobtrail
worker`s, jobs submitted continuously, SSE clients following them; then the Sentinel
master (or a Cluster primary) is SIGKILLed and a replica takes over.

What clients must see: 503 (never 500, never a request outliving its deadline) while
Redis switches, then service again from the same processes; every accepted job finishes,
none stuck, no write from a superseded attempt; every SSE client receives each job's
history exactly once, in order, resuming with Last-Event-ID across the switch.

Submissions and terminal events wait for a replica (JOBTRAIL_WAIT_REPLICAS=1), so none of
them may be lost. Other events can be: replication is asynchronous, and an event delivered
a moment before the kill may never have reached the replica that took over. Only events
written just before the kill may be missing from a history; the test counts them.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest

from jobtrail.keys import Keys
from tests.support.api import history
from tests.support.serve import serve, wait_ready
from tests.support.topologies import RedisCluster, SentinelGroup, wait_until
from tests.support.worker_procs import Workers
from tests.support.workload import TERMINAL, Workload

REDIS_TIMEOUT_S = 2.0
# A request may take its deadline (REDIS_TIMEOUT_S) and the server's own overhead, never more.
REQUEST_LIMIT_S = REDIS_TIMEOUT_S + 2.0
PROCESS_ENV = {
    "JOBTRAIL_REDIS_TIMEOUT_S": str(REDIS_TIMEOUT_S),
    "JOBTRAIL_WAIT_REPLICAS": "1",
    "JOBTRAIL_WAIT_TIMEOUT_MS": "1000",
    "JOBTRAIL_AUTH": "off",
}
# How long before the kill an event may have been written and still be lost.
LOSS_WINDOW_MS = 1000


@pytest.fixture
def failover_settings(settings):
    # A job whose `started` a failover lost is left pending without a queue message, and a
    # worker whose lease was on the old master loses it: the reaper puts both right, soon.
    return msgspec.structs.replace(settings, lease_ttl_s=3.0, reaper_interval_s=1.0, pending_stale_s=3.0)


def kill_primary(topology, keys: Keys):
    """SIGKILL the master (Sentinel) or the primary serving the queue (Cluster); return (node, ms)."""
    group = topology.group
    node = group.master() if isinstance(group, SentinelGroup) else group.node_for(keys.queue())
    killed_ms = int(time.time() * 1000)
    node.kill()
    return node, killed_ms


def switched(topology, old) -> bool:
    group = topology.group
    if isinstance(group, SentinelGroup):
        return group.master() is not old
    assert isinstance(group, RedisCluster)
    return old not in group.primary_nodes() and len(group.primary_nodes()) == group.primaries


@pytest.mark.parametrize("topology", ["sentinel", "cluster"], indirect=True)
async def test_a_killed_primary_costs_clients_503s_for_the_switch_and_nothing_else(
        topology, failover_settings, keys, tmp_path):
    settings = failover_settings
    process, url = serve(settings, tmp_path, **PROCESS_ENV)
    workers = Workers(settings, tmp_path)
    try:
        await wait_ready(process, url)
        for _ in range(2):
            await workers.start(**PROCESS_ENV)
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_LIMIT_S + 5) as http:
            workload = Workload(http, params={"steps": 4, "delay_ms": 100})
            stop = asyncio.Event()
            submitting = asyncio.create_task(workload.submit_until(stop))
            await asyncio.sleep(2.0)
            old, killed_ms = kill_primary(topology, keys)
            killed_at = workload.now_s()
            await asyncio.to_thread(wait_until, lambda: switched(topology, old), 30, "no replica took over")
            deadline = time.monotonic() + 30
            while not workload.served_since(killed_at + 0.5):
                assert time.monotonic() < deadline, f"the API did not serve again: {workload.answers}"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            stop.set()
            await submitting
            assert process.poll() is None, "jobtrail serve died"
            await check_jobs(http, workload, killed_ms)
        for worker in workers.started:
            assert worker.process.poll() is None, f"a worker died:\n{worker.output()}"
    finally:
        workers.close()
        process.kill()
        process.wait()


async def check_jobs(http: httpx.AsyncClient, workload: Workload, killed_ms: int) -> None:
    answers = workload.answers
    assert set(answers) <= {"202", "503", "sse 200", "sse 503", "sse dropped"}, answers
    assert answers["503"] >= 1, f"no 503 while the primary was away: {answers}"
    slowest = max(took for _, _, took in workload.timeline)
    assert slowest < REQUEST_LIMIT_S, f"a submission took {slowest:.1f} s"
    # Every accepted job finishes: none stuck running or pending, none lost.
    finish_by = time.monotonic() + 40
    for job_id in workload.accepted:
        while True:
            response = await http.get(f"/jobs/{job_id}")
            assert response.status_code != 404, f"job {job_id} was accepted, then lost"
            if response.status_code == 200 and response.json()["state"] in TERMINAL:
                break
            assert time.monotonic() < finish_by, f"job {job_id} stuck: {response.text}"
            await asyncio.sleep(0.2)
    await workload.followers_done(30)
    lost = 0
    for job_id in workload.accepted:
        events = await history(http, job_id)
        attempts = [event["attempt"] for event in events]
        assert attempts == sorted(attempts), f"job {job_id}: a superseded attempt wrote after a newer one: {events}"
        followed = workload.followed.get(job_id)
        if followed is None:
            continue
        stored = [event["id"] for event in events]
        assert len(set(followed.ids)) == len(followed.ids), f"job {job_id}: an event delivered twice"
        missing = [event_id for event_id in followed.ids if event_id not in stored]
        for event_id in missing:
            at_ms = int(event_id.split("-")[0])
            assert killed_ms - LOSS_WINDOW_MS <= at_ms <= killed_ms + 50, \
                f"job {job_id}: delivered {event_id}, absent after the failover, not written just before it"
        lost += len(missing)
        assert [event_id for event_id in followed.ids if event_id in stored] == stored, \
            f"job {job_id}: the SSE client missed events: got {followed.ids}, stored {stored}"
        assert followed.gaps == 0
    print(f"answers {dict(answers)}; {len(workload.accepted)} jobs; {lost} delivered events lost in the failover")

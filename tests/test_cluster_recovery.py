"""Twenty writers sharing one Cluster client in one process ride out a killed primary (app/cluster.py).

redis-py's asyncio RedisCluster alone did not: under this load a writer's append failed
with an AttributeError (a connection closed under it by another task's cleanup), which is
no Redis error, so neither the API's 503 nor a worker's waiting applies to it. Here every
writer runs jobs as a worker does (bench/failover.py's writers: each event with an
idempotency key, retried while Redis is away, for up to 30 s, any other error raised),
while the primary of a job being written is SIGKILLed and its replica takes over, twice,
since the race does not show on every failover.
"""

from __future__ import annotations

import asyncio
import functools
import time

import msgspec
import pytest

from bench.failover import Acked, Writers
from jobtrail.eventlog import EventLog
from jobtrail.keys import Keys
from jobtrail.store import Store
from tests.support.topologies import RedisCluster, wait_until

pytestmark = pytest.mark.e2e

WRITERS = 20
FAILOVERS = 2
# From the switch until every writer has had an append acknowledged again: a writer
# backs off 0.1 s between tries, and the client reloads the slot map once.
CARRY_ON_S = 10.0
# Replication is asynchronous: an append acknowledged this shortly before the kill may
# not have reached the replica that took over (README, "Failover and lost writes"). A
# 1 s held in a dozen runs on a quiet machine, but twice in some twenty runs on a busy
# one (the whole suite on two cores) an append acknowledged earlier than that was lost:
# a replica starved of CPU lags further behind, we think (not proven), hence 3 s.
LOSS_WINDOW_S = 3.0


def took_over(cluster: RedisCluster, gone) -> bool:
    return gone not in cluster.primary_nodes() and len(cluster.primary_nodes()) == cluster.primaries


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_twenty_writers_on_one_client_carry_on_after_a_killed_primary_losing_and_duplicating_nothing(
        topology, settings, keys: Keys):
    cluster = topology.group
    assert isinstance(cluster, RedisCluster)
    client = Store(msgspec.structs.replace(settings, redis_timeout_s=1.0), role="test").pooled()
    events = EventLog(client, keys, 3600, activity_maxlen=0)
    writers = Writers(events, WRITERS, "w")
    stop = asyncio.Event()
    running = asyncio.create_task(writers.until(stop))
    kills: list[float] = []
    try:
        for _ in range(FAILOVERS):
            await asyncio.sleep(1.5)
            gone = await asyncio.to_thread(cluster.node_for, keys.events(writers.load.acked[-1].job_id))
            kills.append(time.monotonic())
            gone.kill()
            await asyncio.to_thread(wait_until, functools.partial(took_over, cluster, gone), 30, "no replica took over")
            switched = time.monotonic()
            while min(writers.last_acked) < switched:
                assert not running.done(), f"a writer failed: {running.exception()!r}"
                stuck = sum(1 for at in writers.last_acked if at < switched)
                assert time.monotonic() - switched < CARRY_ON_S, \
                    f"{stuck} of {WRITERS} writers had no append acknowledged {CARRY_ON_S:.0f} s after the switch"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(cluster.restore)  # the old primary rejoins, as a replica
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await running  # a writer's error (other than Redis being away) is raised here

    by_job: dict[str, list[Acked]] = {}
    for acked in writers.load.acked:
        by_job.setdefault(acked.job_id, []).append(acked)
    lost: list[Acked] = []
    duplicated = 0
    for job_id, acks in by_job.items():
        history = [event async for event in events.events(job_id)]
        stored = {event.id for event in history}
        lost += [acked for acked in acks if acked.id not in stored]
        idempotency = [event.key for event in history if event.key]
        duplicated += len(idempotency) - len(set(idempotency))
    assert duplicated == 0
    for acked in lost:
        assert any(killed - LOSS_WINDOW_S <= acked.at <= killed for killed in kills), \
            f"{acked} was acknowledged, and lost, not just before a kill (kills at {kills}, window {LOSS_WINDOW_S} s)"
    assert len(writers.load.acked) > 0
    print(f"{len(writers.load.acked)} appends acknowledged by {WRITERS} writers over {FAILOVERS} failovers; "
          f"lost {len(lost)} (acknowledged < {LOSS_WINDOW_S:.0f} s before a kill), duplicated 0")
    await client.aclose()

"""JOBTRAIL_WAIT_REPLICAS against real replicas: the waited events wait, the others do not,
and a replica that cannot answer (SIGSTOP) makes the wait end at its timeout with a clear
outcome: the event written, `replicas` below what was asked, a warning in the log."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.replicawait import ReplicaWait
from tests.support.topologies import Node, RedisCluster, SentinelGroup, TopologyUnderTest

REPLICATED = pytest.mark.parametrize("topology", ["sentinel", "cluster"], indirect=True)
SUBMITTED = {"kind": "demo", "params": {}, "max_attempts": 1}


def replicas_of(topology: TopologyUnderTest, key: str) -> list[Node]:
    """The replicas of the primary that holds `key` now."""
    group = topology.group
    if isinstance(group, SentinelGroup):
        master = group.master()
        return [node for node in group.servers if node is not master and node.running]
    assert isinstance(group, RedisCluster)
    primary = group.node_for(key)
    return [node for node in group.nodes if node.running and node is not primary
            and node.info("replication").get("master_port") == primary.port]


@contextmanager
def frozen(nodes: list[Node]) -> Iterator[None]:
    """The nodes stopped (SIGSTOP) for the block: alive, connected, answering nothing."""
    for node in nodes:
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for node in nodes:
            assert node.process is not None
            node.process.send_signal(signal.SIGCONT)


def event_log(redis_client, keys, replicas: int, timeout_ms: int) -> EventLog:
    return EventLog(redis_client, keys, 60, activity_maxlen=0, replica_wait=ReplicaWait(replicas, timeout_ms))


@REPLICATED
async def test_submissions_and_outcomes_wait_for_the_replicas_and_the_other_events_do_not(topology, redis_client,
                                                                                        keys):
    events = event_log(redis_client, keys, 1, 5000)
    submitted = await events.append("job-1", EventType.SUBMITTED, SUBMITTED)
    started = await events.append("job-1", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    succeeded = await events.append("job-1", EventType.SUCCEEDED, {"result": 1}, attempt=1)
    assert submitted.replicas is not None and submitted.replicas >= 1
    assert succeeded.replicas is not None and succeeded.replicas >= 1
    assert started.replicas is None  # not a waited event: no WAIT sent
    # What WAIT confirmed is really on the replica (replicas apply the stream in order).
    for replica in replicas_of(topology, keys.events("job-1")):
        with replica.client() as client:
            if isinstance(topology.group, RedisCluster):
                client.execute_command("READONLY")  # a cluster replica redirects reads unless told
            ids = [entry_id for entry_id, _ in client.xrange(keys.events("job-1"))]
        if succeeded.id in ids:
            break
    else:
        pytest.fail("no replica holds the terminal event that WAIT confirmed")


@REPLICATED
async def test_a_frozen_replica_makes_the_outcome_wait_out_its_timeout_and_say_it_was_not_confirmed(
        topology, redis_client, keys, caplog):
    events = event_log(redis_client, keys, 1, 400)
    await events.append("job-2", EventType.SUBMITTED, SUBMITTED)
    await events.append("job-2", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    with frozen(replicas_of(topology, keys.events("job-2"))), caplog.at_level(logging.WARNING):
        began = time.monotonic()
        progress = await events.append("job-2", EventType.PROGRESS, {"progress": 0.5}, attempt=1)
        progress_took = time.monotonic() - began
        began = time.monotonic()
        failed = await events.append("job-2", EventType.FAILED, {"error": {"type": "E", "message": "m"}},
                                     attempt=1)
        failed_took = time.monotonic() - began
    assert progress.replicas is None and progress_took < 0.3  # progress never waits
    assert failed.replicas == 0
    assert failed_took >= 0.35, "the terminal event did not wait for the replica"
    assert failed_took < 3, "the wait outlived its timeout"
    assert (await events.state("job-2")).state == "failed"  # written all the same, on the primary
    assert "only 0 of 1 replicas confirmed it within 400 ms" in caplog.text


@pytest.mark.parametrize("topology", ["sentinel"], indirect=True)
async def test_waiting_for_more_replicas_than_answer_waits_out_the_timeout_with_the_count_that_did(
        topology, redis_client, keys):
    events = event_log(redis_client, keys, 2, 300)
    replicas = replicas_of(topology, keys.events("job-3"))
    with frozen(replicas[:1]):
        appended = await events.append("job-3", EventType.SUBMITTED, SUBMITTED)
    assert appended.replicas == 1

"""The queue as taskiq-redis lays it out (workers/queue.py), read on messages its own broker wrote.

On one server, a Sentinel group and a Cluster: the queue is one key, so all of it runs there.
"""

from __future__ import annotations

import asyncio

import pytest

from jobtrail.batching import SharedPipeline
from jobtrail.keys import Keys
from jobtrail.workers.broker import JobBroker, build_broker, enqueue
from jobtrail.workers.queue import JobQueue, group_name, job_of
from tests.support.topologies import over_topologies

pytestmark = over_topologies


@pytest.fixture
async def broker(settings, keys):
    made = build_broker(settings, keys)
    assert isinstance(made, JobBroker)
    await made.startup()  # declares the workers' group on the queue
    yield made
    await made.shutdown()


async def test_a_message_the_broker_enqueued_names_its_job(broker, redis_client, keys):
    await enqueue(broker, "job-1")
    await redis_client.xadd(keys.queue(), {"data": "not taskiq's"})

    assert [job_of(fields) for _, fields in await redis_client.xrange(keys.queue())] == ["job-1", None]


def test_the_broker_reads_the_queue_and_group_this_module_names(settings, keys):
    broker = build_broker(settings, keys)
    assert (broker.queue_name, broker.consumer_group_name) == (keys.queue(), group_name(keys))
    assert group_name(keys) != group_name(Keys(f"{keys.prefix}-other")), "one group per prefix"


async def test_messages_handed_back_are_queued_again_for_any_worker_and_acknowledged(broker, redis_client, keys):
    for job_id in ("a", "b"):
        await enqueue(broker, job_id)
    group = group_name(keys)
    await redis_client.xreadgroup(group, "stopping", {keys.queue(): ">"}, count=1)  # read "a", never ran it
    queue = JobQueue.of(redis_client, keys)

    assert await queue.hand_back("stopping", 100) == 1
    assert await queue.hand_back("stopping", 100) == 0, "nothing is left pending for it"

    assert await redis_client.xpending(keys.queue(), group) == {"pending": 0, "min": None, "max": None,
                                                                  "consumers": []}
    unread = await redis_client.xreadgroup(group, "another", {keys.queue(): ">"})
    assert [job_of(fields) for _, fields in unread[0][1]] == ["b", "a"]


async def test_unread_messages_are_seen_until_the_group_reads_them_and_trimmed_once_acknowledged(
    broker, redis_client, keys
):
    queue = JobQueue.of(redis_client, keys)
    assert not await queue.has_unread()
    for job_id in ("a", "b"):
        await enqueue(broker, job_id)
    assert await queue.has_unread()

    [(_, read)] = await redis_client.xreadgroup(group_name(keys), "w", {keys.queue(): ">"})
    assert not await queue.has_unread()
    assert await queue.trim() == 0, "read but not acknowledged: kept"

    await redis_client.xack(keys.queue(), group_name(keys), *(message_id for message_id, _ in read))
    assert await queue.trim() == 1, "the last one read stays: XTRIM MINID keeps the id it is given"
    assert [job_of(fields) for _, fields in await redis_client.xrange(keys.queue())] == ["b"]


async def test_messages_a_dead_worker_read_go_back_on_the_queue_once_idle_for_long_enough(broker, redis_client, keys):
    # taskiq-redis's Cluster broker never does this (taskiq-redis#130): a dead worker's
    # message would stay pending for ever, and the queue could never be trimmed past it.
    for job_id in ("a", "b", "c"):
        await enqueue(broker, job_id)
    group = group_name(keys)
    await redis_client.xreadgroup(group, "died", {keys.queue(): ">"}, count=2)  # "a", "b": never acknowledged
    queue = JobQueue.of(redis_client, keys)

    assert await queue.reclaim_idle("reaper", min_idle_ms=60_000, limit=100) == 0, "not idle for long enough yet"
    await asyncio.sleep(0.05)
    assert await queue.reclaim_idle("reaper", min_idle_ms=10, limit=1) == 1, "at most `limit` at a time"
    assert await queue.reclaim_idle("reaper", min_idle_ms=10, limit=100) == 1

    assert (await redis_client.xpending(keys.queue(), group))["pending"] == 0
    unread = await redis_client.xreadgroup(group, "alive", {keys.queue(): ">"})
    assert [job_of(fields) for _, fields in unread[0][1]] == ["c", "a", "b"]


async def test_the_broker_delivers_each_message_once_and_acknowledges_it(broker, redis_client, keys):
    await enqueue(broker, "job-1")
    received = aiter(broker.listen())
    message = await asyncio.wait_for(anext(received), 10)
    assert job_of({"data": message.data}) == "job-1"
    assert (await redis_client.xpending(keys.queue(), group_name(keys)))["pending"] == 1
    await message.ack()
    await broker.flush_acks()
    assert (await redis_client.xpending(keys.queue(), group_name(keys)))["pending"] == 0
    await received.aclose()


async def test_an_ack_rides_on_the_next_read_which_takes_a_message_per_free_slot(broker, redis_client, keys):
    broker.concurrency = 2
    await enqueue(broker, "job-1")
    received = aiter(broker.listen())
    first = await asyncio.wait_for(anext(received), 10)
    for job_id in ("job-2", "job-3", "job-4"):
        await enqueue(broker, job_id)
    await first.ack()

    second = await asyncio.wait_for(anext(received), 10)
    pending = await redis_client.xpending(keys.queue(), group_name(keys))
    assert pending["pending"] == 2, "job-1 acknowledged by the read that took job-2 and job-3, both slots free"
    assert [job_of({"data": second.data}), job_of({"data": (await anext(received)).data})] == ["job-2", "job-3"]
    await received.aclose()


async def test_a_busy_workers_read_and_its_acks_ride_in_the_runners_shared_round_trip(broker, redis_client, keys):
    shared = SharedPipeline(broker.redis, in_flight=1)
    ridden = []

    async def run(queue):
        ridden.append(queue)
        return await shared.run(queue)

    broker.concurrency, broker.shared = 4, run
    await enqueue(broker, "job-1")
    received = aiter(broker.listen())
    first = await asyncio.wait_for(anext(received), 10)
    assert ridden == [], "an idle worker's read blocks, on a connection of its own"
    await enqueue(broker, "job-2")
    await enqueue(broker, "job-3")
    second = await asyncio.wait_for(anext(received), 10)
    assert len(ridden) == 1, "job-1 runs: the read rides in the shared round trip, without BLOCK"
    await first.ack()
    third = await asyncio.wait_for(anext(received), 10)
    assert len(ridden) == 1, "job-3 came with job-2's read"
    await enqueue(broker, "job-4")
    fourth = await asyncio.wait_for(anext(received), 10)
    assert len(ridden) == 2
    assert [job_of({"data": m.data}) for m in (first, second, third, fourth)] == ["job-1", "job-2", "job-3", "job-4"]
    pending = await redis_client.xpending(keys.queue(), group_name(keys))
    assert pending["pending"] == 3, "job-1's ack went ahead of that read; job-2 to job-4 are read, not acknowledged"
    await received.aclose()

"""The hub (app/hub.py, app/wakes.py): wake-ups by sharded pub/sub, and what happens when one is lost.

Tests that kill pub/sub connections run on a Redis server of their own: CLIENT KILL TYPE
pubsub on the shared one would hit every other test's hub too.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, SucceededData
from jobtrail.hub import Hub, Subscription, SubscriptionClosed
from jobtrail.keys import Keys
from jobtrail.services import Services, open_services
from tests.support.env import ROOT
from tests.support.jobs import eventually, progress, running_job, stream_ids
from tests.support.redis_server import RedisServer
from tests.support.sse import open_stream
from tests.support.ws import events_of, open_socket

WAIT_S = 15.0


@pytest.fixture
async def own_server(tmp_path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


async def hub_services(settings: Settings) -> Services:
    services = open_services(settings, role="api")
    services.hub.start()
    return services


async def close(services: Services) -> None:
    await services.hub.stop()
    await services.redis.aclose()


async def next_ids(sub: Subscription, count: int) -> list[str]:
    got = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < count and time.monotonic() < deadline:
        try:
            item = await sub.get(timeout=0.5)
        except SubscriptionClosed:
            break
        if item is not None:
            got.append(item.id)
    return got


def raw_progress(step: int) -> dict[str, str]:
    """The fields of a progress event as the append script writes them."""
    data = msgspec.json.encode({"progress": step / 10, "current": step, "total": 10}).decode()
    return {"type": "progress", "at": str(int(time.time() * 1000)), "v": "1", "attempt": "1", "data": data}


async def test_a_wake_lost_with_its_pubsub_connection_is_recovered_with_nothing_lost(own_server, settings):
    # The sweep is off (an hour): only the hub's reaction to the lost connection may save the event.
    s = msgspec.structs.replace(settings, redis_url=own_server.url, hub_catch_up_s=3600.0)
    services = await hub_services(s)
    admin = aioredis.Redis.from_url(own_server.url, decode_responses=True)
    try:
        await running_job(services.events, "j")
        stream = services.keys.events("j")
        sub = await services.hub.subscribe(stream, after=(await stream_ids(admin, services.keys, "j"))[-1])
        await progress(services.events, "j", 1, 10)
        assert len(await next_ids(sub, 1)) == 1
        for round_ in range(3):
            # In one transaction: the connection is gone before the entry's wake is published,
            # so that wake reaches nobody; the hub must notice and read the stream again.
            async with admin.pipeline(transaction=True) as pipe:
                pipe.client_kill_filter(_type="pubsub")
                pipe.xadd(stream, raw_progress(2 + round_))
                pipe.spublish(services.keys.wake(stream), "")
                _, added, reached = await pipe.execute()
            assert reached == 0
            assert await next_ids(sub, 1) == [added], f"round {round_}: the entry written while unsubscribed"
            await progress(services.events, "j", 5 + round_, 10)  # and the wakes flow again
            assert len(await next_ids(sub, 1)) == 1
        assert sub.closed is None
    finally:
        await admin.aclose()
        await close(services)


async def test_an_entry_that_publishes_no_wake_is_read_by_the_catch_up_sweep(settings, events, redis_client, keys):
    s = msgspec.structs.replace(settings, hub_catch_up_s=1.0)
    services = await hub_services(s)
    try:
        await running_job(events, "quiet")
        stream = keys.events("quiet")
        sub = await services.hub.subscribe(stream, after=(await stream_ids(redis_client, keys, "quiet"))[-1])
        added = await redis_client.xadd(stream, raw_progress(1))  # no SPUBLISH: as repair or a migration writes
        assert await next_ids(sub, 1) == [added]
    finally:
        await close(services)


async def test_contiguous_wakes_deliver_their_entries_without_a_read(settings, keys):
    # The sweep off: a read counted below could only be a wake's.
    services = await hub_services(msgspec.structs.replace(settings, hub_catch_up_s=3600.0))
    try:
        await running_job(services.events, "w")
        stream = keys.events("w")
        sub = await services.hub.subscribe(stream, after=(await stream_ids(services.redis, keys, "w"))[-1])
        await asyncio.sleep(0.3)  # the subscribe-time read is done
        reads = services.hub.reads
        for step in range(1, 6):
            await progress(services.events, "w", step, 5)
        assert await next_ids(sub, 5) == (await stream_ids(services.redis, keys, "w"))[-5:]
        assert services.hub.reads == reads
        assert services.hub.wake_deliveries >= 5
    finally:
        await close(services)


def reports(count: int, message: str = "") -> list[tuple[EventType, dict]]:
    return [(EventType.PROGRESS, {"progress": n / count, "message": message}) for n in range(1, count + 1)]


async def test_a_batch_of_reports_is_delivered_from_its_wake_without_a_read(settings, events, redis_client, keys):
    services, sub = await quiet_follow(settings, events, redis_client, keys, "many")
    try:
        reads = services.hub.reads
        for batch in range(3):
            await events.append_many("many", reports(20), attempt=1, keys=[f"k{batch}.{n}" for n in range(20)],
                                     slot="s")
        ids = await stream_ids(redis_client, keys, "many")
        assert await next_ids(sub, 60) == ids[-60:]
        assert services.hub.reads == reads
        assert services.hub.wake_deliveries >= 60
    finally:
        await close(services)


async def test_a_batch_too_big_to_carry_in_its_wake_has_the_stream_read(settings, events, redis_client, keys):
    services, sub = await quiet_follow(settings, events, redis_client, keys, "big")
    try:
        reads = services.hub.reads
        await events.append_many("big", reports(40, "x" * 1000), attempt=1, keys=[f"k{n}" for n in range(40)],
                                 slot="s")
        ids = await stream_ids(redis_client, keys, "big")
        assert await next_ids(sub, 40) == ids[-40:]
        assert services.hub.reads > reads
    finally:
        await close(services)


async def test_a_batch_after_an_entry_that_published_nothing_is_read_from_the_cursor(settings, events,
                                                                                   redis_client, keys):
    services, sub = await quiet_follow(settings, events, redis_client, keys, "hole")
    try:
        unpublished = await redis_client.xadd(keys.events("hole"), raw_progress(1))  # as repair or a migration writes
        await events.append_many("hole", reports(3), attempt=1, keys=["a", "b", "c"], slot="s")
        ids = await stream_ids(redis_client, keys, "hole")
        assert ids[-4] == unpublished
        assert await next_ids(sub, 4) == ids[-4:]
    finally:
        await close(services)


async def quiet_follow(settings: Settings, events: EventLog, redis_client: aioredis.Redis, keys: Keys,
                       job: str) -> tuple[Services, Subscription]:
    """A hub with its sweep off (only wakes can make it read) following a running job from its last event."""
    services = await hub_services(msgspec.structs.replace(settings, hub_catch_up_s=3600.0))
    await running_job(events, job)
    sub = await services.hub.subscribe(keys.events(job), after=(await stream_ids(redis_client, keys, job))[-1])
    await asyncio.sleep(0.3)  # the subscribe-time read is done
    return services, sub


async def test_an_entry_between_the_cursor_and_a_wake_is_read_before_the_wake_is_delivered(settings, events,
                                                                                          redis_client, keys):
    # Only the wake's previous id can tell the hub that it missed an entry.
    services, sub = await quiet_follow(settings, events, redis_client, keys, "gap")
    try:
        unpublished = await redis_client.xadd(keys.events("gap"), raw_progress(1))  # as repair or a migration writes
        await progress(events, "gap", 2, 10)
        ids = await stream_ids(redis_client, keys, "gap")
        assert ids[-2] == unpublished
        assert await next_ids(sub, 2) == ids[-2:]
    finally:
        await close(services)


async def test_a_wake_of_an_older_append_script_a_bare_id_still_has_the_stream_read(settings, events, redis_client,
                                                                                   keys):
    # During a rolling upgrade a worker of the release before publishes the new id alone.
    services, sub = await quiet_follow(settings, events, redis_client, keys, "old")
    try:
        stream = keys.events("old")
        added = await redis_client.xadd(stream, raw_progress(1))
        await redis_client.spublish(keys.wake(stream), added)
        assert await next_ids(sub, 1) == [added]
    finally:
        await close(services)


async def test_a_second_follower_starts_at_the_hubs_cursor_and_is_offered_everything_after_it(settings, events,
                                                                                              redis_client, keys):
    # A follow replays only up to its subscription's start: the hub must offer all that follows.
    services, first = await quiet_follow(settings, events, redis_client, keys, "two")
    try:
        for step in range(1, 4):
            await progress(events, "two", step, 10)
        assert len(await next_ids(first, 3)) == 3
        second = await services.hub.subscribe(keys.events("two"), after="0-0")
        assert second.start == (await stream_ids(redis_client, keys, "two"))[-1]
        for step in range(4, 7):
            await progress(events, "two", step, 10)
        ids = await stream_ids(redis_client, keys, "two")
        assert await next_ids(second, 3) == ids[-3:]
        assert await next_ids(first, 3) == ids[-3:]
    finally:
        await close(services)



async def test_a_subscription_is_shared_only_while_its_stream_has_another(settings, events, redis_client, keys):
    # A follow caches its items' frames (app/frames.py) only when another follower would reuse them.
    services, first = await quiet_follow(settings, events, redis_client, keys, "peers")
    try:
        assert not first.shared
        second = await services.hub.subscribe(keys.events("peers"), after="0-0")
        assert first.shared and second.shared
        services.hub.unsubscribe(second)
        assert not first.shared
    finally:
        await close(services)

async def test_a_redis_that_stays_down_ends_the_subscriptions_for_their_clients_to_resume(own_server, settings):
    s = msgspec.structs.replace(settings, redis_url=own_server.url, redis_timeout_s=1.0)
    services = await hub_services(s)
    try:
        await running_job(services.events, "j")
        sub = await services.hub.subscribe(services.keys.events("j"), after="0-0")
        own_server.kill()
        deadline = time.monotonic() + WAIT_S
        while sub.closed is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sub.closed is not None and sub.closed.reason == "event store unavailable"
        assert services.hub.watched_count == 0
    finally:
        await close(services)


async def test_thousands_of_watched_streams_get_every_event_and_a_read_names_only_what_changed(settings, keys):
    # The sweep off: the reads counted below are the wakes' alone.
    services = await hub_services(msgspec.structs.replace(settings, hub_catch_up_s=3600.0))
    hub: Hub = services.hub
    events = services.events  # its pool waits for a free connection; the test's own client would refuse
    count = 2500
    try:
        ids = [f"w{n}" for n in range(count)]
        for start in range(0, count, 250):
            await asyncio.gather(*(running_job(events, job) for job in ids[start : start + 250]))
        subs = {}
        for start in range(0, count, 250):
            chunk = ids[start : start + 250]
            subscribed = await asyncio.gather(*(hub.subscribe(keys.events(job), after="0-0") for job in chunk))
            subs.update(zip(chunk, subscribed, strict=True))
        assert hub.watched_count == count
        assert hub.wakes.connections == 1
        for sub in subs.values():  # the replay's part: what was there at subscribing
            assert len(await next_ids(sub, 2)) == 2
        for start in range(0, count, 250):
            await asyncio.gather(*(progress(events, job, 1, 2) for job in ids[start : start + 250]))
        for job, sub in subs.items():
            [event] = await next_ids(sub, 1)
            assert event == (await stream_ids(services.redis, keys, job))[-1], job
        # One more event on one stream costs one read, however many streams are watched.
        await asyncio.sleep(0.5)
        before = hub.reads
        await progress(events, "w7", 2, 2)
        assert len(await next_ids(subs["w7"], 1)) == 1
        assert hub.reads - before <= 3
        for sub in subs.values():
            hub.unsubscribe(sub)
        assert hub.watched_count == 0
    finally:
        await close(services)


async def test_an_api_holds_a_constant_number_of_redis_connections_however_many_jobs_are_watched(
    own_server, start_api, settings
):
    pool_size = 7  # with the hub's one pub/sub connection: 8
    s = msgspec.structs.replace(settings, redis_url=own_server.url, redis_pool_size=pool_size,
                                sse_connections_per_tenant=1000)
    api = await start_api(s)
    admin = aioredis.Redis.from_url(own_server.url, decode_responses=True)
    jobs = [f"c{n}" for n in range(150)]
    try:
        await asyncio.gather(*(running_job(api.services.events, job) for job in jobs))
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as http:
            streams = []
            contexts = [open_stream(http, f"/jobs/{job}/events") for job in jobs for _ in range(2)]
            try:
                for start in range(0, len(contexts), 50):
                    streams += await asyncio.gather(*(c.__aenter__() for c in contexts[start : start + 50]))
                await asyncio.gather(*(s.events(2, timeout=WAIT_S) for s in streams))
                assert api.services.hub.watched_count == len(jobs)
                counts = []
                for step in range(1, 3):
                    await asyncio.gather(*(progress(api.services.events, job, step, 2) for job in jobs))
                    got = await asyncio.gather(*(s.events(1, timeout=WAIT_S) for s in streams))
                    assert all(len(g) == 1 for g in got)
                    clients = await admin.client_list()
                    counts.append(sum(1 for c in clients if c.get("name", "").startswith("jobtrail-api")))
                assert max(counts) <= pool_size + 1, counts
            finally:
                await asyncio.gather(*(c.__aexit__(None, None, None) for c in contexts[: len(streams)]),
                                     return_exceptions=True)
    finally:
        await admin.aclose()


# --- on a real Cluster: jobs on all three primaries ---


def jobs_on_every_primary(topology, keys, per_primary: int = 1) -> list[str]:
    """Job ids whose slots are served by each primary of the cluster, `per_primary` of each."""
    found: dict[int, list[str]] = {}
    primaries = {node.port for node in topology.group.primary_nodes()}
    n = 0
    while any(len(found.get(port, [])) < per_primary for port in primaries):
        job = f"cl{n}"
        port = topology.group.node_for(keys.events(job)).port
        if len(found.setdefault(port, [])) < per_primary:
            found[port].append(job)
        n += 1
    return [job for port in sorted(found) for job in found[port]]


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_sse_resumes_exactly_on_a_cluster_for_jobs_on_every_primary(topology, start_api, settings, events,
                                                                          redis_client, keys):
    api = await start_api(settings)
    jobs = jobs_on_every_primary(topology, keys)
    assert len({topology.group.node_for(keys.events(j)).port for j in jobs}) == 3
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        for job in jobs:
            await running_job(events, job)
            async with open_stream(http, f"/jobs/{job}/events") as stream:
                replay = await stream.events(2, timeout=WAIT_S)
                await progress(events, job, 1, 3)
                [live] = await stream.events(1, timeout=WAIT_S)
            await progress(events, job, 2, 3)  # while the client is away
            await events.append(job, EventType.SUCCEEDED, SucceededData(result={"ok": True}))
            headers = {"Last-Event-ID": live.id}
            async with open_stream(http, f"/jobs/{job}/events", headers=headers) as stream:
                rest = await stream.rest(timeout=WAIT_S)
            got = [m.id for m in [*replay, live, *rest] if m.id]
            assert got == await stream_ids(redis_client, keys, job), job
    assert api.services.hub.wakes.connections <= 3


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_one_websocket_follows_jobs_on_every_primary_of_a_cluster(topology, start_api, settings, events,
                                                                        redis_client, keys):
    api = await start_api(settings)
    jobs = jobs_on_every_primary(topology, keys, per_primary=2)
    for job in jobs:
        await running_job(events, job)
    async with open_socket(api.url) as socket:
        for job in jobs:
            await socket.send(op="subscribe", job=job, after=None)
        await socket.until(lambda f: sum(1 for g in socket.received if g.get("type") == "subscribed") == len(jobs))
        for step in range(1, 4):
            await asyncio.gather(*(progress(events, job, step, 3) for job in jobs))
        for job in jobs:
            await events.append(job, EventType.SUCCEEDED, SucceededData(result={"ok": True}))
        ended: set[str] = set()

        def all_ended(frame: dict) -> bool:
            if frame.get("type") == "end":
                ended.add(frame["job"])
            return ended == set(jobs)

        await socket.until(all_ended)
        for job in jobs:
            assert [f["id"] for f in events_of(socket.received, job)] == await stream_ids(redis_client, keys, job)
    await eventually(lambda: api.services.hub.watched_count == 0)


def test_the_hub_bench_runs_and_delivers_every_event(redis_url):
    # A tiny run of `python -m bench.hub` (the real one is not a test): it starts, and exits 0 only when
    # every event emitted was delivered.
    command = [sys.executable, "-m", "bench.hub", "--jobs", "20", "--seconds", "2", "--redis-url", redis_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| 20 | 1 | 1 | 40 | 40 |" in done.stdout


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_a_watched_jobs_primary_killed_on_a_cluster_loses_no_event(topology, settings, events, redis_client,
                                                                          keys):
    services = await hub_services(settings)
    try:
        [job] = jobs_on_every_primary(topology, keys)[:1]
        await running_job(events, job)
        stream = keys.events(job)
        sub = await services.hub.subscribe(stream, after=(await stream_ids(redis_client, keys, job))[-1])
        old = topology.group.node_for(stream)
        old.kill()
        deadline = time.monotonic() + 60
        while True:  # the replica takes over; appends fail until it has
            try:
                await progress(events, job, 1, 2)
                break
            except Exception:
                assert time.monotonic() < deadline, "no failover within 60 s"
                await asyncio.sleep(0.5)
        after_failover = (await stream_ids(redis_client, keys, job))[-1]
        got = await next_ids(sub, 1)
        if sub.closed is not None:
            # The hub came back before the new primary did: the subscription ended for the
            # client to resume, which a new subscription's replay does exactly.
            assert sub.closed.reason == "event store unavailable"
        else:
            assert got == [after_failover]
        again = await services.hub.subscribe(stream, after=after_failover)
        await progress(events, job, 2, 2)
        assert len(await next_ids(again, 1)) == 1, "the hub follows the new primary"
    finally:
        await close(services)

"""append.lua's wake names the new entry exactly as the stream holds it, and the entry before it in the stream."""

from __future__ import annotations

import asyncio

import msgspec
import redis.asyncio as aioredis

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.hub import parse_wake
from jobtrail.keys import Keys
from jobtrail.services import open_services
from tests.support.jobs import running_job, stream_ids

WAIT_S = 5.0


async def wakes_of(redis_url: str, channel: str, count: int, ready: asyncio.Event) -> list[bytes]:
    """The next `count` payloads published on `channel`, as the hub's socket reader gets them (bytes)."""
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.execute_command("SSUBSCRIBE", channel)
        got: list[bytes] = []
        while len(got) < count:
            message = await pubsub.get_message(timeout=WAIT_S)
            if message is None:
                continue
            if message["type"] == "ssubscribe":
                ready.set()
            elif message["type"] == "smessage":
                got.append(message["data"])
        return got
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_each_wake_is_its_entry_and_the_streams_previous_one_whatever_wrote_before_it(
    redis_url: str, events: EventLog, redis_client: aioredis.Redis, keys: Keys
):
    stream = keys.events("w")
    ready = asyncio.Event()
    listener = asyncio.ensure_future(wakes_of(redis_url, keys.wake(stream), 8, ready))
    await asyncio.wait_for(ready.wait(), WAIT_S)
    job = {"kind": "demo", "params": {"ü": "\n"}, "max_attempts": 2}
    submitted = await events.append("w", EventType.SUBMITTED, job)
    await events.append("w", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    # Bytes, not characters, measure `d`; a key may hold spaces and newlines; an `at` puts a space in `e`.
    await events.append("w", EventType.PROGRESS, {"progress": 0.5, "message": "größe 5 \n 6"}, attempt=1,
                        key="a key\nwith lines ", at_ms=1_700_000_000_000, incarnation=submitted.id)
    await events.append_many("w", [(EventType.LOG, {"level": "info", "message": "batched"})] * 2, attempt=1,
                             keys=["c.1", "c.2"], slot="c")
    await events.append("w", EventType.PHASE, {"phase": "after the batch"}, attempt=1, key="c.3", slot="c")
    # A write that is no append: the stream is one entry longer than the hash counted.
    foreign = await redis_client.xadd(stream, {"e": "105", "d": '"info","foreign"', "k": ""})
    await events.append("w", EventType.LOG, {"level": "info", "message": "after it"}, attempt=1)
    await events.append("w", EventType.PROGRESS, {"progress": 0.75}, attempt=1)
    await events.append("w", EventType.SUCCEEDED, {"result": {"ok": True}}, attempt=1)
    published = await asyncio.wait_for(listener, WAIT_S)
    # append.lua's; the batch published its last id alone (append_many.lua).
    payloads = [payload for payload in published if payload.startswith(b"~")]
    assert len(payloads) == 7

    entries = await redis_client.xrange(stream)
    before = {entry_id: (entries[n - 1][0] if n else "") for n, (entry_id, _) in enumerate(entries)}
    fields = dict(entries)
    batch = [entry_id for entry_id, entry in entries if entry["k"] in ("c.1", "c.2")]
    woken = [parse_wake(payload) for payload in payloads]
    assert [entry_id for entry_id, _, _ in woken] == [e for e, _ in entries if e not in (*batch, foreign)]
    for entry_id, previous, flat in woken:
        assert previous == before[entry_id]
        pairs = iter(flat)
        assert dict(zip(pairs, pairs, strict=True)) == fields[entry_id]
    assert woken[3][1] == batch[-1] and woken[4][1] == foreign
    # The same wake as text (redis-py's reader) parses the same.
    assert [parse_wake(payload.decode()) for payload in payloads] == woken


def test_a_wake_that_is_not_the_scripts_shape_is_a_value_error():
    for payload in (b"~1-0 0-1", b"~1-0 0-1 9 103\nshort", b"~1-0 0-1 x 103\nd", "~1-0\n"):
        try:
            parse_wake(payload)
        except ValueError:
            continue
        raise AssertionError(f"{payload!r} parsed")


async def test_a_json_wake_of_the_script_before_is_still_delivered_without_a_read(settings: Settings, keys: Keys):
    # A rolling upgrade: a worker of the release before publishes [id, previous, fields] as JSON.
    services = open_services(msgspec.structs.replace(settings, hub_catch_up_s=3600.0), role="api")
    services.hub.start()
    try:
        await running_job(services.events, "old")
        stream = keys.events("old")
        cursor = (await stream_ids(services.redis, keys, "old"))[-1]
        sub = await services.hub.subscribe(stream, after=cursor)
        await asyncio.sleep(0.3)  # the subscribe-time read is done
        reads, delivered = services.hub.reads, services.hub.wake_deliveries
        fields = {"e": "103", "d": '0.5,null,null,"half"', "k": ""}
        added = await services.redis.xadd(stream, fields)
        flat = [part for pair in fields.items() for part in pair]
        await services.redis.spublish(keys.wake(stream), msgspec.json.encode([added, cursor, flat]))
        item = await sub.get(timeout=WAIT_S)
        assert item is not None and item.id == added
        assert services.hub.reads == reads and services.hub.wake_deliveries == delivered + 1
    finally:
        await services.hub.stop()
        await services.redis.aclose()

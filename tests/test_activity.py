"""The activity feed: every job's transitions in one capped stream, and GET /events.

Jobs are made by appending events straight to the event log (no worker); what a client
receives is always compared with the feed's stream as XRANGE returns it.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from jobtrail.auth import hash_key, new_key
from jobtrail.eventlog import EventLog
from jobtrail.events import (
    ErrorInfo,
    EventType,
    LogData,
    ProgressData,
    ReasonData,
    RetryingData,
    StartedData,
    SubmittedData,
    SucceededData,
)
from jobtrail.keys import Keys
from tests.conftest import RunningApi
from tests.support.redis_server import RedisServer
from tests.support.sse import Message, entry_at_ms, expected_event, open_stream
from tests.support.topologies import over_hub_topologies, over_topologies

# --- making jobs ---


async def submitted(events: EventLog, job_id: str, kind: str = "demo", tenant: str | None = None) -> None:
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind=kind, params={}, max_attempts=2, tenant=tenant))


async def short_job(events: EventLog, job_id: str, kind: str = "demo", tenant: str | None = None) -> None:
    """submitted, started, a progress event (not a transition), succeeded."""
    await submitted(events, job_id, kind, tenant)
    await events.append(job_id, EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append(job_id, EventType.PROGRESS, ProgressData(progress=0.5))
    await events.append(job_id, EventType.SUCCEEDED, SucceededData(result=1))


async def feed(redis_client: aioredis.Redis, keys: Keys) -> list[tuple[str, dict[str, str]]]:
    return await redis_client.xrange(keys.activity())


def ids(messages: list[Message]) -> list[str | None]:
    return [m.id for m in messages]


def hub_of(api: RunningApi):
    return api.services.hub


# --- recording ---


@over_topologies
async def test_every_transition_and_cancel_request_is_recorded_with_its_job_and_event_id(events, redis_client, keys):
    await submitted(events, "j")
    await events.append("j", EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append("j", EventType.PROGRESS, ProgressData(progress=0.3, phase="load"))
    await events.append("j", EventType.PHASE, {"phase": "save"})
    await events.append("j", EventType.LOG, LogData(level="info", message="hello"))
    await events.append("j", EventType.CANCEL_REQUESTED, ReasonData(reason="stop"), key="cancel")
    await events.append("j", EventType.CANCEL_REQUESTED, ReasonData(reason="stop"), key="cancel")  # duplicate
    error = ErrorInfo(type="Boom", message="no")
    await events.append("j", EventType.RETRYING, RetryingData(error=error, delay_s=0, next_attempt=2))
    await events.append("j", EventType.STARTED, StartedData(worker="w", attempt=2), attempt=2)
    await events.append("j", EventType.CANCELLED, ReasonData(reason="stop"))

    job_entries = {f"{event['type']}:{event['attempt']}": entry_id
                   for entry_id, fields in await redis_client.xrange(keys.events("j"))
                   for event in [expected_event(entry_id, fields)]}
    recorded = [fields for _, fields in await feed(redis_client, keys)]
    assert [(f["type"], f["state"], f["attempt"]) for f in recorded] == [
        ("submitted", "pending", "0"),
        ("started", "running", "1"),
        ("cancel_requested", "running", "1"),  # once: the duplicate wrote nothing
        ("retrying", "pending", "1"),
        ("started", "running", "2"),
        ("cancelled", "cancelled", "2"),
    ]
    assert all(f["job_id"] == "j" and f["kind"] == "demo" for f in recorded)
    assert [f["event_id"] for f in recorded] == [job_entries[f"{f['type']}:{f['attempt']}"] for f in recorded]
    entries = await redis_client.xrange(keys.events("j"))
    job_at = {entry_id: str(entry_at_ms(entry_id, fields)) for entry_id, fields in entries}
    assert all(f["at"] == job_at[f["event_id"]] for f in recorded)


async def test_a_failing_feed_write_never_fails_the_append(events, redis_client, keys, caplog):
    await redis_client.set(keys.activity(), "not a stream")  # every XADD to it now fails
    appended = await events.append("j", EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1))
    assert appended.state == "pending"
    assert (await events.state("j")).state == "pending"
    assert any("activity feed" in record.getMessage() for record in caplog.records)


async def test_a_feed_capped_at_zero_records_nothing(redis_client, keys):
    silent = EventLog(redis_client, keys, 60, activity_maxlen=0)
    await short_job(silent, "j", tenant="acme")
    assert not await redis_client.exists(keys.activity())
    assert not await redis_client.exists(keys.tenant_activity("acme"))


@over_topologies
async def test_a_tenants_transitions_go_to_the_global_feed_and_to_its_own(events, redis_client, keys):
    await short_job(events, "a", tenant="acme")
    await short_job(events, "g", tenant="globex")
    await short_job(events, "open")  # no tenant (access control off, or an admin's job)

    everybody = [fields for _, fields in await feed(redis_client, keys)]
    assert [f["job_id"] for f in everybody] == ["a"] * 3 + ["g"] * 3 + ["open"] * 3
    for tenant, job_id in (("acme", "a"), ("globex", "g")):
        own = [fields for _, fields in await redis_client.xrange(keys.tenant_activity(tenant))]
        assert own == [f for f in everybody if f["job_id"] == job_id]


# --- GET /events ---


@over_hub_topologies
async def test_feed_replays_then_follows_live_transitions_of_several_jobs(client, events, redis_client, keys, settings):
    await short_job(events, "before")

    async with open_stream(client, "/events?after=0-0") as stream:
        hint = await stream.next()
        replayed = await stream.events(3)
        await asyncio.gather(*(short_job(events, f"live-{n}", kind=f"k{n % 2}") for n in range(4)))
        live = await stream.events(12)

    assert hint is not None and hint.retry == settings.sse_retry_ms
    entries = await feed(redis_client, keys)
    assert ids(replayed + live) == [entry_id for entry_id, _ in entries]
    assert {m.json["job_id"] for m in live} == {f"live-{n}" for n in range(4)}
    for message, (entry_id, fields) in zip(replayed + live, entries, strict=True):
        body = message.json
        assert message.event == fields["type"] == body["type"]
        assert body["id"] == entry_id
        assert (body["job_id"], body["kind"], body["state"], body["event_id"]) == (
            fields["job_id"], fields["kind"], fields["state"], fields["event_id"]
        )
    assert [m.json["state"] for m in live if m.json["job_id"] == "live-1"] == ["pending", "running", "succeeded"]


async def test_a_client_without_an_offset_starts_at_the_live_tail(client, events):
    await short_job(events, "old")
    async with open_stream(client, "/events") as stream:
        await short_job(events, "new")
        got = await stream.events(3)
    assert [m.json["job_id"] for m in got] == ["new"] * 3, "the backlog is not replayed"


async def test_feed_stays_open_and_pings_while_idle(client, events, settings):
    await short_job(events, "j")
    async with open_stream(client, "/events?after=0-0") as stream:
        await stream.events(3)
        pings = []
        while len(pings) < 2:
            message = await stream.next(timeout=settings.sse_ping_s * 3)
            assert message is not None, "the feed never closes by itself"
            assert not message.data
            pings += [c for c in message.comments if c == "ping"]


@over_hub_topologies
async def test_reconnecting_with_the_last_seen_id_yields_every_transition_exactly_once(
    client, events, redis_client, keys, api
):
    rng = random.Random(7)
    jobs = 40

    async def writer() -> None:
        for n in range(jobs):
            await short_job(events, f"job-{n}")
            await asyncio.sleep(rng.uniform(0, 0.01))

    writing = asyncio.create_task(writer())
    seen: list[Message] = []
    reconnects = 0
    while len(seen) < jobs * 3:
        headers = {"Last-Event-ID": seen[-1].id if seen else "0-0"}
        async with open_stream(client, "/events", headers=headers) as stream:
            for _ in range(rng.randint(1, 12)):
                if len(seen) == jobs * 3:
                    break
                message = await stream.next_event()
                assert message is not None
                seen.append(message)
        reconnects += 1
    await writing

    assert reconnects >= 5, "the client really did disconnect several times"
    assert ids(seen) == [entry_id for entry_id, _ in await feed(redis_client, keys)]
    assert len(set(ids(seen))) == jobs * 3
    for _ in range(100):
        if hub_of(api).subscriber_count == 0:
            break
        await asyncio.sleep(0.05)
    assert hub_of(api).subscriber_count == 0


@pytest.mark.parametrize("parameter", ["after", "last_event_id"])
async def test_resume_from_query_parameter_replays_only_later_transitions(
    client, events, redis_client, keys, parameter
):
    for n in range(3):
        await short_job(events, f"j{n}")
    all_ids = [entry_id for entry_id, _ in await feed(redis_client, keys)]
    async with open_stream(client, f"/events?{parameter}={all_ids[4]}") as stream:
        assert ids(await stream.events(4)) == all_ids[5:]
        with pytest.raises(TimeoutError):  # nothing more is owed, and the feed stays open
            await stream.next_event(timeout=0.5)


async def test_offset_older_than_the_capped_feed_starts_with_a_gap(start_api, settings, redis_client, keys):
    capped = msgspec.structs.replace(settings, activity_maxlen=10)
    api = await start_api(capped)
    log = EventLog(redis_client, keys, 60, activity_maxlen=capped.activity_maxlen)
    await short_job(log, "first")
    offset = (await feed(redis_client, keys))[0][0]
    for n in range(150):  # `~` trimming drops whole stream nodes (about 100 entries each)
        await short_job(log, f"j{n}")
    entries = await feed(redis_client, keys)
    assert len(entries) < 150 * 3, "the cap trimmed the feed"
    assert entries[0][0] != offset

    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        async with open_stream(http, "/events", headers={"Last-Event-ID": offset}) as stream:
            gap = await stream.next_event()
            replayed = await stream.events(len(entries))
        assert gap is not None and gap.event == "gap"
        assert gap.id is None, "a gap has no id, so the client's Last-Event-ID stays at a real entry"
        assert gap.json == {"first_available": entries[0][0]}
        assert ids(replayed) == [entry_id for entry_id, _ in entries]

        # A client that already has the first entry kept lost nothing.
        async with open_stream(http, "/events", headers={"Last-Event-ID": entries[0][0]}) as stream:
            got = await stream.events(3)
        assert "gap" not in [m.event for m in got]
        # Nor did one that gave no offset: it starts at the live tail.
        async with open_stream(http, "/events") as stream:
            await short_job(log, "live")
            got = await stream.events(3)
        assert [m.json["job_id"] for m in got] == ["live"] * 3


@over_hub_topologies
async def test_feed_filters_by_kind_and_state(client, events, redis_client, keys):
    await short_job(events, "a1", kind="alpha")
    await short_job(events, "b1", kind="beta")
    await submitted(events, "a2", kind="alpha")

    async with open_stream(client, "/events?after=0-0&kind=alpha") as stream:
        got = await stream.events(4)
        assert [(m.json["job_id"], m.event) for m in got] == [
            ("a1", "submitted"), ("a1", "started"), ("a1", "succeeded"), ("a2", "submitted")
        ]
        await short_job(events, "b2", kind="beta")
        await events.append("a2", EventType.CANCELLED, ReasonData())
        assert [(m.json["job_id"], m.event) for m in await stream.events(1)] == [("a2", "cancelled")]

    async with open_stream(client, "/events?after=0-0&state=succeeded") as stream:
        got = await stream.events(3)
    assert [m.json["job_id"] for m in got] == ["a1", "b1", "b2"]


@pytest.mark.parametrize(
    ("headers", "query"), [({"Last-Event-ID": "abc"}, ""), (None, "?after=1-2-3"), (None, "?last_event_id=x")]
)
async def test_malformed_offset_is_400(client, headers, query):
    response = await client.get(f"/events{query}", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- cost: a tenant's connect does not grow with other tenants' traffic ---

BUSY_ENTRIES = 20_000


async def fill_busy_feed(redis: aioredis.Redis, keys: Keys, count: int) -> None:
    """`count` transitions of tenant `busy`, laid out as the append path records them, pipelined."""
    for start in range(0, count, 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 2000)):
                fields = {"job_id": f"busy-{n}", "type": "submitted", "state": "pending", "at": 1_800_000_000_000,
                          "event_id": "1-1", "attempt": 0, "kind": "demo", "tenant": "busy"}
                pipe.xadd(keys.activity(), fields)
                pipe.xadd(keys.tenant_activity("busy"), fields)
            await pipe.execute()


async def xrange_calls(redis: aioredis.Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_xrange", {}).get("calls", 0))


async def test_a_quiet_tenants_connect_reads_none_of_a_busy_tenants_entries(start_api, settings, tmp_path):
    # A server of its own: the XRANGE count must be this test's alone.
    server = RedisServer(tmp_path / "redis").start()
    redis = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        quiet, admin = new_key(), new_key()
        secured = msgspec.structs.replace(
            settings, redis_url=server.url, auth="on", api_keys=f"quiet:{hash_key(quiet)},*:{hash_key(admin)}"
        )
        keys = Keys(secured.prefix)
        log = EventLog(redis, keys, 60, activity_maxlen=secured.activity_maxlen)
        await short_job(log, "quiet-1", tenant="quiet")
        await short_job(log, "busy-1", tenant="busy")
        await fill_busy_feed(redis, keys, BUSY_ENTRIES)
        await short_job(log, "quiet-2", tenant="quiet")
        old = (await redis.xrange(keys.tenant_activity("quiet"), count=1))[0][0]
        api = await start_api(secured)

        cases = [  # (key, offset header, job ids expected before the live job's three)
            (quiet, {}, []),
            (quiet, {"Last-Event-ID": old}, ["quiet-1"] * 2 + ["quiet-2"] * 3 + ["live-0"] * 3),
            (admin, {}, []),
        ]
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            for n, (key, offset, replayed) in enumerate(cases):
                await redis.config_resetstat()
                headers = {"Authorization": f"Bearer {key}", **offset}
                async with open_stream(http, "/events", headers=headers) as stream:
                    await short_job(log, f"live-{n}", tenant="quiet")
                    got = await stream.events(len(replayed) + 3, timeout=10)
                assert [m.json["job_id"] for m in got] == [*replayed, *[f"live-{n}"] * 3], (n, offset)
                # One page (500 entries) of replay at most, plus the hub's reads of the
                # quiet feed alone (one on subscribing, at most one per live transition);
                # reading the busy tenant's entries would take BUSY_ENTRIES / 500 = 40 XRANGE calls.
                assert await xrange_calls(redis) <= 2 + 1 + 3, (n, offset)
        await api.stop()
    finally:
        await redis.aclose()
        server.kill()

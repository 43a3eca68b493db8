"""GET /jobs/{id}/events: replay, resume, live tail, gaps and the hub's limits.

Jobs are made by appending events straight to the event log (no worker); what a client
receives is always compared with the job's stream as XRANGE returns it.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
import time
from contextlib import AsyncExitStack

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from jobtrail.auth import OPEN
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, SucceededData
from jobtrail.hub import Hub
from jobtrail.keys import Keys
from tests.conftest import RunningApi
from tests.support.jobs import eventually, finished_job, progress, running_job, stream_ids
from tests.support.sse import Message, as_expected, expected_event, open_stream
from tests.support.topologies import over_hub_topologies

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


# --- making jobs ---


def ids(messages: list[Message]) -> list[str | None]:
    return [m.id for m in messages]


def hub_of(api: RunningApi) -> Hub:
    """The hub of an API started in this process (its Litestar app's state)."""
    return api.services.hub


# --- replay ---


async def test_finished_job_replays_every_event_in_order_then_closes(client, events, redis_client, keys, settings):
    await finished_job(events, "done")

    async with open_stream(client, "/jobs/done/events") as stream:
        hint = await stream.next()
        got = await stream.rest()

    assert hint is not None and hint.retry == settings.sse_retry_ms, "the first block is the reconnection hint"
    assert hint.data == "" and hint.id is None
    entries = await redis_client.xrange(keys.events("done"))
    assert ids(got) == [entry_id for entry_id, _ in entries]
    assert [m.event for m in got] == [expected_event(*entry)["type"] for entry in entries]
    for message, (entry_id, fields) in zip(got, entries, strict=True):
        assert set(message.json) == {"id", "type", "at", "attempt", "data"}
        assert ISO_UTC.match(message.json["at"]), message.json["at"]
        assert as_expected(message) == expected_event(entry_id, fields)
    assert stream.received[-1].event == "succeeded", "nothing (not even a ping) follows the terminal event"


async def chunks_of(url: str, path: str) -> list[bytes]:
    """The HTTP/1.1 chunks of a response as the server wrote them, until it ends the body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
        chunks = []
        async with asyncio.timeout(10):
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append((await reader.readexactly(size + 2))[:-2])
        return chunks
    finally:
        writer.close()


async def test_a_replay_is_written_a_page_at_a_time_not_an_event_at_a_time(api, events, redis_client, keys):
    await finished_job(events, "done", steps=40)

    replay = await chunks_of(api.url, "/jobs/done/events")

    assert len(replay) == 1, "the hint and the whole replay (under one page) are one chunk"
    assert replay[0].startswith(b"retry: ")
    sent = [entry_id.decode() for entry_id in re.findall(rb"^id: (\S+)$", replay[0], re.M)]
    assert sent == await stream_ids(redis_client, keys, "done")


@over_hub_topologies
async def test_resume_from_last_event_id_replays_only_missed_events(client, events, redis_client, keys):
    await finished_job(events, "done")
    all_ids = await stream_ids(redis_client, keys, "done")

    for cut in (0, 3, len(all_ids) - 2):
        async with open_stream(client, "/jobs/done/events", headers={"Last-Event-ID": all_ids[cut]}) as stream:
            assert ids(await stream.rest()) == all_ids[cut + 1 :]


@over_hub_topologies
@pytest.mark.parametrize("parameter", ["after", "last_event_id"])
async def test_resume_from_query_parameter_replays_only_missed_events(client, events, redis_client, keys, parameter):
    await finished_job(events, "done")
    all_ids = await stream_ids(redis_client, keys, "done")

    async with open_stream(client, f"/jobs/done/events?{parameter}={all_ids[4]}") as stream:
        assert ids(await stream.rest()) == all_ids[5:]


async def test_last_event_id_header_wins_over_query_parameters(client, events, redis_client, keys):
    await finished_job(events, "done")
    all_ids = await stream_ids(redis_client, keys, "done")

    path = f"/jobs/done/events?after={all_ids[1]}&last_event_id={all_ids[2]}"
    async with open_stream(client, path, headers={"Last-Event-ID": all_ids[5]}) as stream:
        assert ids(await stream.rest()) == all_ids[6:]


@over_hub_topologies
async def test_resume_after_the_terminal_event_answers_204_so_eventsource_stops(client, events, redis_client, keys):
    # What a browser's EventSource does when the server closes after the terminal event;
    # 204 is the answer that makes it stop reconnecting.
    await finished_job(events, "done")
    last = (await stream_ids(redis_client, keys, "done"))[-1]

    response = await client.get("/jobs/done/events", headers={"Last-Event-ID": last})
    assert response.status_code == 204 and response.content == b""
    before_last = (await stream_ids(redis_client, keys, "done"))[-2]
    async with open_stream(client, "/jobs/done/events", headers={"Last-Event-ID": before_last}) as stream:
        assert [m.event for m in await stream.rest(timeout=3)] == ["succeeded"]


# --- live tail ---


@over_hub_topologies
async def test_live_tail_delivers_events_appended_after_connecting_then_closes_at_terminal(
    client, events, redis_client, keys
):
    await running_job(events, "live")

    async with open_stream(client, "/jobs/live/events") as stream:
        replayed = await stream.events(2)
        live = []
        for step in range(1, 4):
            await progress(events, "live", step, 3)
            live += await stream.events(1)  # each arrives before the next is written
        await events.append("live", EventType.SUCCEEDED, SucceededData(result=3))
        live += await stream.rest()

    assert [m.event for m in replayed] == ["submitted", "started"]
    assert [m.event for m in live] == ["progress", "progress", "progress", "succeeded"]
    assert ids(replayed + live) == await stream_ids(redis_client, keys, "live")
    assert [m.json["data"]["current"] for m in live[:3]] == [1, 2, 3]


@pytest.mark.parametrize("offset", ["hour-ahead", "18446744073709551615", "18446744073709551615-18446744073709551614"])
async def test_stream_resumed_from_a_future_offset_gets_new_events_and_closes_at_terminal(
    client, events, redis_client, keys, offset
):
    # No client can hold an event that does not exist yet: an offset past the job's last
    # event means "everything so far", so the live tail still ends at the terminal event.
    await running_job(events, "ahead")
    if offset == "hour-ahead":
        offset = f"{int(time.time() * 1000) + 3_600_000}-0"
    before = await stream_ids(redis_client, keys, "ahead")

    async with open_stream(client, "/jobs/ahead/events", headers={"Last-Event-ID": offset}) as stream:
        await progress(events, "ahead", 1, 1)
        await events.append("ahead", EventType.SUCCEEDED, SucceededData(result=1))
        live = await stream.rest(timeout=5)

    assert [m.event for m in live] == ["progress", "succeeded"]
    assert before + ids(live) == await stream_ids(redis_client, keys, "ahead")


async def test_first_client_of_a_job_gets_live_events_without_waiting_out_the_hubs_blocking_read(
    start_api, settings, events
):
    # The hub is parked in a long XREAD over other streams; subscribing must wake it.
    api = await start_api(msgspec.structs.replace(settings, hub_block_ms=20_000))
    await running_job(events, "fresh")
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=30) as http,
        open_stream(http, "/jobs/fresh/events") as stream,
    ):
        await stream.events(2)
        await progress(events, "fresh", 1, 2)
        live = await stream.events(1, timeout=3)
    assert live[0].json["data"]["current"] == 1


@over_hub_topologies
async def test_reconnecting_with_the_last_seen_id_yields_every_event_exactly_once(
    client, events, redis_client, keys, api
):
    await running_job(events, "flaky")
    rng = random.Random(20240601)

    async def writer() -> None:
        for step in range(1, 151):
            await progress(events, "flaky", step, 150)
            await asyncio.sleep(rng.uniform(0, 0.008))
        await events.append("flaky", EventType.SUCCEEDED, SucceededData(result=150))

    writing = asyncio.create_task(writer())
    seen: list[Message] = []
    reconnects = 0
    while not seen or seen[-1].event != "succeeded":
        headers = {"Last-Event-ID": seen[-1].id} if seen else None
        async with open_stream(client, "/jobs/flaky/events", headers=headers) as stream:
            for _ in range(rng.randint(1, 25)):
                message = await stream.next_event()
                if message is None:
                    break
                seen.append(message)
        reconnects += 1
    await writing

    entries = await redis_client.xrange(keys.events("flaky"))
    assert reconnects >= 5, "the client really did disconnect mid-job several times"
    assert ids(seen) == [entry_id for entry_id, _ in entries]
    assert [as_expected(m) for m in seen] == [expected_event(i, f) for i, f in entries]
    await eventually(lambda: hub_of(api).subscriber_count == 0)


@over_hub_topologies
async def test_no_event_is_lost_or_duplicated_between_replay_and_live_tail(client, events, redis_client, keys):
    await running_job(events, "busy")
    stream_key = keys.events("busy")

    async def writer() -> None:
        for step in range(1, 301):
            await progress(events, "busy", step, 300)
            if step % 5 == 0:
                await asyncio.sleep(0.002)
        await events.append("busy", EventType.SUCCEEDED, SucceededData(result=300))

    async def follower(number: int) -> tuple[str | None, list[str | None]]:
        await asyncio.sleep(0.025 * number)
        offset = None
        if number % 3 == 1:  # from the newest event: the whole follow is live
            offset = (await redis_client.xrevrange(stream_key, count=1))[0][0]
        elif number % 3 == 2:  # from the middle: replay overlaps the live tail
            so_far = await redis_client.xrange(stream_key)
            offset = so_far[len(so_far) // 2][0]
        headers = {"Last-Event-ID": offset} if offset else None
        async with open_stream(client, "/jobs/busy/events", headers=headers) as stream:
            return offset, ids(await stream.rest(timeout=20))

    writing = asyncio.create_task(writer())
    results = await asyncio.gather(*(follower(n) for n in range(10)))
    await writing

    all_ids = await stream_ids(redis_client, keys, "busy")
    assert len(all_ids) == 303
    for offset, got in results:
        start = all_ids.index(offset) + 1 if offset else 0
        assert got == all_ids[start:], f"client from {offset}: {len(got)} events, expected {len(all_ids) - start}"
    assert len({offset for offset, _ in results}) > 3, "clients started at different offsets"


# --- gaps ---


@pytest.mark.parametrize("trim", ["xtrim", "xdel"])
async def test_offset_older_than_the_trimmed_stream_starts_with_a_gap_event_carrying_the_state(
    client, events, redis_client, keys, trim
):
    await finished_job(events, "old", steps=8)
    all_ids = await stream_ids(redis_client, keys, "old")
    if trim == "xtrim":
        await redis_client.xtrim(keys.events("old"), maxlen=5, approximate=False)
    else:
        await redis_client.xdel(keys.events("old"), *all_ids[:-5])
    remaining = all_ids[-5:]
    state = (await client.get("/jobs/old")).json()

    for headers in ({"Last-Event-ID": all_ids[2]}, None):
        async with open_stream(client, "/jobs/old/events", headers=headers) as stream:
            got = await stream.rest()
        gap, rest = got[0], got[1:]
        assert gap.event == "gap"
        assert gap.id is None, "a gap has no id, so the client's Last-Event-ID stays at a real event"
        assert gap.json == state
        assert ids(rest) == remaining


@pytest.mark.parametrize("trim", [None, "xtrim", "xdel"])
async def test_no_gap_event_when_nothing_after_the_offset_was_trimmed(client, events, redis_client, keys, trim):
    await finished_job(events, "job", steps=8)
    all_ids = await stream_ids(redis_client, keys, "job")
    offset = None
    if trim == "xtrim":  # the client already has the first event that remains
        await redis_client.xtrim(keys.events("job"), maxlen=5, approximate=False)
        offset, expected = all_ids[-5], all_ids[-4:]
    elif trim == "xdel":  # events were deleted, but only before the client's offset
        await redis_client.xdel(keys.events("job"), *all_ids[3:5])
        offset, expected = all_ids[5], all_ids[6:]
    else:
        expected = all_ids

    headers = {"Last-Event-ID": offset} if offset else None
    async with open_stream(client, "/jobs/job/events", headers=headers) as stream:
        got = await stream.rest()
    assert ids(got) == expected, [m.event for m in got]


# --- refusals ---


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Last-Event-ID": "abc"}, ""),
        ({"Last-Event-ID": "1-2-3"}, ""),
        ({"Last-Event-ID": "-5"}, ""),
        ({"Last-Event-ID": "99999999999999999999999-0"}, ""),
        (None, "?after=abc"),
        (None, "?last_event_id=1-x"),
    ],
)
async def test_malformed_offset_is_400_with_a_json_error(client, events, headers, query):
    await finished_job(events, "j")
    response = await client.get(f"/jobs/j/events{query}", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_request"
    assert "event id" in response.json()["detail"]


@pytest.mark.parametrize("job_id", ["nope", "bad%20id"])
async def test_unknown_job_is_404_before_any_stream_starts(client, job_id):
    response = await client.get(f"/jobs/{job_id}/events")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "job_not_found"


# --- keeping connections honest ---


async def test_idle_stream_sends_ping_comments(client, events, settings):
    await running_job(events, "idle")
    async with open_stream(client, "/jobs/idle/events") as stream:
        await stream.events(2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        pings = []
        while len(pings) < 2:
            message = await stream.next(timeout=settings.sse_ping_s * 3)
            assert message is not None and not message.data, "an idle stream only sends comments"
            pings += [c for c in message.comments if c == "ping"]
        elapsed = loop.time() - started
    assert settings.sse_ping_s * 1.5 <= elapsed <= settings.sse_ping_s * 4


async def test_stream_ends_when_the_job_is_deleted_while_streaming(client, events, api):
    await running_job(events, "gone")
    async with open_stream(client, "/jobs/gone/events") as stream:
        await stream.events(2)
        assert (await client.delete("/jobs/gone")).status_code == 204
        assert await stream.rest(timeout=5) == []
        assert "job was deleted" in stream.received[-1].comments
    await eventually(lambda: hub_of(api).subscriber_count == 0)


def append_burst(redis_url: str, keys: Keys, job_id: str, count: int) -> None:
    """Append `count` progress events from another thread while this one waits.

    The caller's event loop, where the API's hub runs, is blocked meanwhile, so the hub
    finds the whole burst waiting and hands it to subscribers in one go.
    """

    async def burst() -> None:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            log = EventLog(redis, keys, 3600, activity_maxlen=0)
            for step in range(1, count + 1):
                await progress(log, job_id, step, count)
        finally:
            await redis.aclose()

    thread = threading.Thread(target=asyncio.run, args=(burst(),))
    thread.start()
    thread.join()


async def test_subscriber_that_falls_behind_is_disconnected_and_resumes_without_loss(
    start_api, settings, events, redis_client, keys
):
    slow = await start_api(msgspec.structs.replace(settings, sse_queue_size=5))
    await running_job(events, "fast")

    async with httpx.AsyncClient(base_url=slow.url, timeout=30) as http:
        async with open_stream(http, "/jobs/fast/events") as stream:
            first = await stream.events(2)
            append_burst(settings.redis_url, keys, "fast", 60)
            await events.append("fast", EventType.SUCCEEDED, SucceededData(result=60))
            first += await stream.rest()
            closing = stream.received[-1]
        assert first[-1].event != "succeeded", "the slow subscriber was cut off before the end"
        assert any("fell too far behind" in c for c in closing.comments)
        await eventually(lambda: hub_of(slow).subscriber_count == 0)

        async with open_stream(http, "/jobs/fast/events", headers={"Last-Event-ID": first[-1].id}) as stream:
            resumed = await stream.rest()

    assert ids(first + resumed) == await stream_ids(redis_client, keys, "fast")


async def api_connections(redis_client: aioredis.Redis) -> int:
    """Redis connections opened by APIs of this process (Store names them by role and pid)."""
    name = f"jobtrail-api-{os.getpid()}"
    return sum(1 for c in await redis_client.client_list() if c.get("name") == name)


async def test_stopping_the_api_closes_its_redis_connections(start_api, settings, events, redis_client):
    api = await start_api(settings)
    await running_job(events, "j")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http, open_stream(http, "/jobs/j/events") as stream:
        await stream.events(2)
        # The replayed events go out before the hub's subscription is confirmed (app/follow.py).
        for _ in range(60):
            if (held := await api_connections(redis_client)) >= 2:
                break
            await asyncio.sleep(0.05)
        assert held >= 2, "the hub's and at least one pooled"
    await api.stop()
    for _ in range(60):
        if (left := await api_connections(redis_client)) == 0:
            break
        await asyncio.sleep(0.05)
    assert left == 0, f"{left} Redis connections still open after the API stopped"


async def test_fifty_clients_on_one_job_share_a_constant_number_of_redis_connections(
    start_api, settings, events, redis_client, keys
):
    pool_size = 4
    api = await start_api(msgspec.structs.replace(settings, redis_pool_size=pool_size))
    await running_job(events, "popular")
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as http, AsyncExitStack() as open_:

        async def connect(count: int) -> list[asyncio.Task[list[Message]]]:
            streams = await asyncio.gather(
                *(open_.enter_async_context(open_stream(http, "/jobs/popular/events")) for _ in range(count))
            )
            for replayed in await asyncio.gather(*(s.events(2) for s in streams)):
                assert [m.event for m in replayed] == ["submitted", "started"]
            return [asyncio.create_task(s.rest(timeout=30)) for s in streams]

        followers = await connect(5)
        await asyncio.sleep(settings.sse_ping_s * 1.5)  # the idle checks run too
        with_5 = await api_connections(redis_client)
        followers += await connect(45)
        counts = []
        for _ in range(8):  # across a couple of ping rounds of all 50 streams
            counts.append(await api_connections(redis_client))
            await asyncio.sleep(settings.sse_ping_s / 4)
        assert hub_of(api).subscriber_count == 50

        for step in range(1, 4):
            await progress(events, "popular", step, 3)
        await events.append("popular", EventType.SUCCEEDED, SucceededData(result=3))
        received = await asyncio.gather(*followers)

    live_ids = (await stream_ids(redis_client, keys, "popular"))[2:]
    assert all(ids(got) == live_ids for got in received), "every client got every live event once"
    assert 1 <= with_5 <= pool_size + 1
    assert max(counts) <= pool_size + 1, f"connections with 50 clients: {counts}"
    assert max(counts) <= with_5, f"grew from {with_5} with 5 clients to {counts} with 50"


async def test_a_corrupt_entry_in_one_stream_does_not_stall_the_live_tail_of_others(
    client, events, redis_client, keys
):
    await running_job(events, "bad")
    await running_job(events, "good")
    async with open_stream(client, "/jobs/bad/events") as bad, open_stream(client, "/jobs/good/events") as good:
        await bad.events(2)
        await good.events(2)
        await redis_client.xadd(keys.events("bad"), {"type": "no-such-type", "at": "x"})
        await asyncio.sleep(0.2)
        await events.append("good", EventType.PROGRESS, {"progress": 0.5})
        [message] = await good.events(1)
        assert message.event == "progress"


async def test_replay_steps_over_an_unreadable_entry_and_a_reconnect_does_not_meet_it_again(
    client, events, redis_client, keys
):
    await running_job(events, "j")
    corrupt = await redis_client.xadd(keys.events("j"), {"type": "progress", "at": "1", "attempt": "1", "data": "[1"})
    await events.append("j", EventType.SUCCEEDED, {"result": 1}, attempt=1)

    async with open_stream(client, "/jobs/j/events") as stream:
        received = await stream.rest()
    skipped = next(m for m in stream.received if m.id == corrupt)
    assert not skipped.data and "unreadable entry skipped" in skipped.comments
    assert [m.event for m in received] == ["submitted", "started", "succeeded"]

    # Resuming from the unreadable entry (the client's Last-Event-ID after it) goes on after it.
    async with open_stream(client, "/jobs/j/events", headers={"Last-Event-ID": corrupt}) as stream:
        assert [m.event for m in await stream.rest()] == ["succeeded"]


async def test_a_request_that_sends_no_stream_gives_back_the_slot_taken_with_its_read(
    start_api, settings, events, redis_client, keys
):
    # The slot is taken in the same round trip as the job's read (app/api/jobs.py), so a
    # 404 or a 204 holds one for that round trip only: the tenant's one slot stays free.
    api = await start_api(msgspec.structs.replace(settings, sse_connections_per_tenant=1))
    await finished_job(events, "done")
    last = (await stream_ids(redis_client, keys, "done"))[-1]
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        for _ in range(3):
            assert (await http.get("/jobs/nosuch/events")).status_code == 404
            assert (await http.get("/jobs/done/events", headers={"Last-Event-ID": last})).status_code == 204
        async with open_stream(http, "/jobs/done/events") as stream:
            await stream.next()
            assert ids(await stream.rest()) == await stream_ids(redis_client, keys, "done")
    await eventually(lambda: api.services.sse_slots.held_count == 0)
    assert await redis_client.zcard(keys.sse_slots(OPEN.scope)) == 0

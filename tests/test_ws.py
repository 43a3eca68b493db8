"""/ws: many jobs and the feed on one WebSocket, against a real server and the `websockets` client.

Jobs are made by appending events straight to the event log (no worker); what a socket
receives is compared with the job's stream as XRANGE returns it.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest

from jobtrail.api.ws_session import Outbox
from jobtrail.auth import hash_key, new_key
from jobtrail.events import EventType, SubmittedData
from tests.support.jobs import eventually, finished_job, progress, running_job, stream_ids
from tests.support.serve import serve, wait_ready
from tests.support.ws import events_of, open_socket

ACME, GLOBEX, ADMIN = "acme-key", "globex-key", "admin-key"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secured(settings):
    return msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(ACME)}, globex:{hash_key(GLOBEX)}, *:{hash_key(ADMIN)}"
    )


async def tenant_job(events, job_id: str, tenant: str | None) -> None:
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1,
                                                                   tenant=tenant))


@pytest.fixture
async def secured_api(start_api, secured):
    return await start_api(secured)


@pytest.fixture
async def secured_http(secured_api):
    async with httpx.AsyncClient(base_url=secured_api.url, timeout=30) as http:
        yield http


async def token_for(http: httpx.AsyncClient, key: str, job: str | None, ttl_s: int | None = None) -> str:
    path = f"/jobs/{job}/tokens" if job else "/events/tokens"
    response = await http.post(path, json={"ttl_s": ttl_s} if ttl_s else None, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["token"]


# --- replay, live, resume ---


async def test_subscribe_acks_then_replays_then_follows_live_until_the_terminal_event(api, events, redis_client, keys):
    await running_job(events, "live")
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="live", after=None)
        ack = await socket.next()
        assert ack == {"type": "subscribed", "job": "live"}
        replayed = [await socket.next(), await socket.next()]
        assert [f["type"] for f in replayed] == ["submitted", "started"]
        await progress(events, "live", 1, 2)
        await events.append("live", EventType.SUCCEEDED, {"result": 1})
        rest = await socket.until_end("live")
    got = replayed + rest
    assert rest[-1] == {"type": "end", "job": "live", "reason": "terminal"}
    assert [f["id"] for f in events_of(got, "live")] == await stream_ids(redis_client, keys, "live")
    for frame in events_of(got, "live"):
        assert set(frame) == {"id", "type", "at", "attempt", "data", "job"}


async def test_the_event_object_is_the_same_as_sse_data_plus_the_job(api, client, events):
    await finished_job(events, "same", steps=2)
    history = (await client.get("/jobs/same/history")).json()["events"]
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="same", after=None)
        frames = await socket.until_end("same")
    assert [{k: v for k, v in f.items() if k != "job"} for f in events_of(frames, "same")] == history


async def test_resubscribing_with_after_resumes_exactly_with_no_loss_and_no_repeat(api, events, redis_client, keys):
    await running_job(events, "resume")
    for step in range(1, 4):
        await progress(events, "resume", step, 10)
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="resume", after=None)
        first = await socket.until(lambda f: f.get("type") == "progress" and f["data"]["current"] == 2)
        await socket.send(op="unsubscribe", job="resume")
        await socket.until_end("resume")
    last = events_of(first, "resume")[-1]["id"]
    for step in range(4, 11):
        await progress(events, "resume", step, 10)
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="resume", after=last)
        assert (await socket.next())["type"] == "subscribed"
        second = await socket.until(lambda f: f.get("type") == "progress" and f["data"]["current"] == 10)
        await events.append("resume", EventType.SUCCEEDED, {"result": 1})
        second += await socket.until_end("resume")
    got = [f["id"] for f in events_of(first, "resume") + events_of(second, "resume")]
    assert got == await stream_ids(redis_client, keys, "resume")


async def test_subscribing_after_the_terminal_event_ends_at_once(api, events, redis_client, keys):
    await finished_job(events, "over", steps=1)
    last = (await stream_ids(redis_client, keys, "over"))[-1]
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="over", after=last)
        assert await socket.until_end("over") == [
            {"type": "subscribed", "job": "over"}, {"type": "end", "job": "over", "reason": "terminal"},
        ]


async def test_two_jobs_on_one_socket_each_in_order_exactly_once(api, events, redis_client, keys):
    await running_job(events, "one")
    await running_job(events, "two")
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="one", after=None)
        await socket.send(op="subscribe", job="two", after=None)
        started: list[str] = []
        await socket.until(lambda f: f.get("type") == "started" and started.append(f["job"]) is None and
                           len(started) == 2)
        for step in range(1, 6):
            await progress(events, "one", step, 5)
            await progress(events, "two", step, 5)
        await events.append("one", EventType.SUCCEEDED, {"result": 1})
        await events.append("two", EventType.SUCCEEDED, {"result": 2})
        ended: list[str] = []
        await socket.until(lambda f: f.get("type") == "end" and ended.append(f["job"]) is None and len(ended) == 2)
    frames = socket.received
    for job in ("one", "two"):
        assert [f["id"] for f in events_of(frames, job)] == await stream_ids(redis_client, keys, job)
        assert {"type": "end", "job": job, "reason": "terminal"} in frames


async def test_unknown_job_ends_not_found_without_an_ack_and_the_socket_stays_open(api):
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="no-such-job", after=None)
        assert await socket.next() == {"type": "end", "job": "no-such-job", "reason": "not found"}
        await socket.send(op="subscribe", job="bad id with spaces", after=None)
        assert (await socket.next())["reason"] == "not found"
        await socket.send(op="ping")
        assert await socket.next() == {"type": "pong"}


# --- the activity feed ---


async def test_feed_subscription_replays_what_the_feed_holds_then_follows_live(api, events, redis_client, keys):
    await finished_job(events, "fed", steps=1)
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", feed=True, after="0-0", kind=None, state=None)
        assert await socket.next() == {"type": "subscribed", "feed": True}
        replayed = await socket.until(lambda f: f.get("type") == "succeeded")
        await running_job(events, "later")
        live = await socket.until(lambda f: f.get("job_id") == "later" and f["type"] == "started")
    feed_ids = [entry_id for entry_id, _ in await redis_client.xrange(keys.activity())]
    assert [f["id"] for f in replayed + live] == feed_ids
    entry = replayed[0]
    assert set(entry) == {"id", "job_id", "kind", "type", "state", "at", "event_id", "attempt", "tenant", "feed"}
    assert entry["feed"] is True and entry["job_id"] == "fed"


async def test_feed_without_after_starts_at_the_live_tail_and_filters_by_state(api, events):
    await finished_job(events, "before", steps=1)
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", feed=True, after=None, state="succeeded")
        assert (await socket.next())["type"] == "subscribed"
        await finished_job(events, "after", steps=1)
        frame = await socket.next()
        assert (frame["job_id"], frame["state"]) == ("after", "succeeded")
        await socket.send(op="unsubscribe", feed=True)
        assert await socket.next() == {"type": "end", "feed": True, "reason": "unsubscribed"}


# --- tenants and tokens ---


async def test_another_tenants_job_answers_as_a_missing_one(secured_api, events):
    await tenant_job(events, "theirs", "globex")
    await tenant_job(events, "ours", "acme")
    async with open_socket(secured_api.url, key=ACME) as socket:
        await socket.send(op="subscribe", job="theirs", after=None)
        assert await socket.next() == {"type": "end", "job": "theirs", "reason": "not found"}
        await socket.send(op="subscribe", job="ours", after=None)
        assert await socket.next() == {"type": "subscribed", "job": "ours"}
    async with open_socket(secured_api.url, key=ADMIN) as socket:
        await socket.send(op="subscribe", job="theirs", after=None)
        assert await socket.next() == {"type": "subscribed", "job": "theirs"}


async def test_a_tenants_feed_holds_only_its_own_jobs(secured_api, events):
    async with open_socket(secured_api.url, key=ACME) as socket:
        await socket.send(op="subscribe", feed=True, after=None)
        assert (await socket.next())["type"] == "subscribed"
        await tenant_job(events, "globex-job", "globex")
        await tenant_job(events, "acme-job", "acme")
        frame = await socket.next()
        assert (frame["job_id"], frame["tenant"]) == ("acme-job", "acme")


@pytest.mark.parametrize(("credentials", "why"), [
    ({}, "send an API key"),
    ({"key": "wrong"}, "not valid"),
    ({"token": "forged.token"}, "token rejected"),
])
async def test_bad_credentials_close_the_socket_with_4401_saying_why(secured_api, credentials, why):
    async with open_socket(secured_api.url, **credentials) as socket:
        code, reason = await socket.closed()
    assert code == 4401 and why in reason


async def test_a_job_token_covers_its_job_only(secured_api, secured_http, events):
    await tenant_job(events, "mine", "acme")
    await tenant_job(events, "other", "acme")
    token = await token_for(secured_http, ACME, "mine")
    async with open_socket(secured_api.url, token=token) as socket:
        await socket.send(op="subscribe", job="mine", after=None)
        assert await socket.next() == {"type": "subscribed", "job": "mine"}
        await socket.send(op="subscribe", job="other", after=None)
        refused = await socket.until(lambda f: f["type"] == "error")
        assert refused[-1]["code"] == "not_covered" and refused[-1]["job"] == "other"
        await socket.send(op="subscribe", feed=True, after=None)
        assert (await socket.until(lambda f: f["type"] == "error"))[-1]["code"] == "not_covered"


async def test_a_feed_token_covers_the_feed_and_every_job_of_its_tenant(secured_api, secured_http, events):
    await tenant_job(events, "acme-1", "acme")
    await tenant_job(events, "globex-1", "globex")
    token = await token_for(secured_http, ACME, None)
    async with open_socket(secured_api.url, token=token) as socket:
        await socket.send(op="subscribe", feed=True, after="0-0")
        assert await socket.next() == {"type": "subscribed", "feed": True}
        assert (await socket.next())["job_id"] == "acme-1"
        await socket.send(op="subscribe", job="acme-1", after=None)
        assert await socket.next() == {"type": "subscribed", "job": "acme-1"}
        await socket.send(op="subscribe", job="globex-1", after=None)
        frames = await socket.until(lambda f: f["type"] == "end" and f.get("job") == "globex-1")
        assert frames[-1]["reason"] == "not found"


async def test_the_socket_of_an_expiring_token_ends_with_token_expired_and_4401(secured_api, secured_http, events):
    await tenant_job(events, "brief", "acme")
    token = await token_for(secured_http, ACME, "brief", ttl_s=2)
    async with open_socket(secured_api.url, token=token) as socket:
        await socket.send(op="subscribe", job="brief", after=None)
        assert (await socket.next())["type"] == "subscribed"
        code, reason = await socket.closed()
    assert code == 4401 and "expired" in reason
    assert socket.received[-1] == {"type": "end", "reason": "token expired"}



async def test_open_mode_still_checks_a_presented_token_and_keeps_it_to_its_job(api, client, events):
    await running_job(events, "open-1")
    await running_job(events, "open-2")
    token = (await client.post("/jobs/open-1/tokens")).json()["token"]
    async with open_socket(api.url, token=token + "x") as socket:
        code, _ = await socket.closed()
        assert code == 4401
    async with open_socket(api.url, token=token) as socket:
        await socket.send(op="subscribe", job="open-2", after=None)
        assert (await socket.next())["code"] == "not_covered"
        await socket.send(op="subscribe", job="open-1", after=None)
        assert await socket.next() == {"type": "subscribed", "job": "open-1"}


# --- bad messages and limits ---


@pytest.mark.parametrize(("raw", "code"), [
    ("{not json", "bad_json"),
    ('["subscribe"]', "bad_message"),
    ('{"op": "watch"}', "unknown_op"),
    ('{"op": "subscribe", "jobs": "x"}', "bad_message"),
    ('{"op": "subscribe"}', "bad_message"),
    ('{"op": "subscribe", "job": "x", "after": "yesterday"}', "bad_message"),
    ('{"op": "subscribe", "feed": true, "state": "sleeping"}', "bad_message"),
    (b'{"op": "ping"}', "bad_message"),
    ('{"op": "ping", "pad": "' + "x" * 5000 + '"}', "message_too_large"),
])
async def test_a_bad_message_gets_an_error_frame_and_the_socket_stays_open(api, raw, code):
    async with open_socket(api.url) as socket:
        await socket.send_raw(raw)
        error = await socket.next()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        await socket.send(op="ping")
        assert await socket.next() == {"type": "pong"}


async def test_bad_messages_that_keep_coming_close_the_socket_with_1008(api, settings):
    async with open_socket(api.url) as socket:
        for _ in range(settings.ws_max_errors + 1):
            await socket.send_raw("{")
        code, reason = await socket.closed()
    assert code == 1008 and "bad messages" in reason
    assert sum(f["type"] == "error" for f in socket.received) == settings.ws_max_errors + 1


async def test_subscriptions_per_socket_are_limited(start_api, settings, events):
    api = await start_api(msgspec.structs.replace(settings, ws_max_subscriptions=2))
    for job in ("a", "b", "c"):
        await running_job(events, job)
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="a", after=None)
        await socket.send(op="subscribe", job="b", after=None)
        await socket.send(op="subscribe", job="c", after=None)
        refused = await socket.until(lambda f: f["type"] == "error")
        assert refused[-1]["code"] == "too_many_subscriptions" and refused[-1]["job"] == "c"
        await socket.send(op="unsubscribe", job="a")
        await socket.until_end("a")
        await socket.send(op="subscribe", job="c", after=None)
        await socket.until(lambda f: f == {"type": "subscribed", "job": "c"})


async def test_sockets_per_tenant_count_with_sse_streams(start_api, secured, events):
    api = await start_api(msgspec.structs.replace(secured, sse_connections_per_tenant=2))
    await tenant_job(events, "s", "acme")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http, \
            http.stream("GET", "/jobs/s/events", headers=bearer(ACME)) as sse:
        assert sse.status_code == 200
        async with open_socket(api.url, key=ACME) as first:
            await first.send(op="ping")
            assert await first.next() == {"type": "pong"}
            async with open_socket(api.url, key=ACME) as second:
                code, reason = await second.closed()
            assert code == 4429 and "open event streams" in reason
            async with open_socket(api.url, key=GLOBEX) as other_tenant:
                await other_tenant.send(op="ping")
                assert await other_tenant.next() == {"type": "pong"}
    await eventually(lambda: api.services.sse_slots.held_count == 0)


# --- the server's side: draining, slow clients ---


async def test_a_draining_hub_ends_subscriptions_with_server_stopping_and_resuming_is_exact(
    api, events, redis_client, keys
):
    await running_job(events, "drained")
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="drained", after=None)
        before = await socket.until(lambda f: f.get("type") == "started")
        api.services.hub.drain()
        end = await socket.until_end("drained")
    assert end[-1]["reason"] == "server stopping"
    await progress(events, "drained", 1, 1)
    await events.append("drained", EventType.SUCCEEDED, {"result": 1})
    # The draining process still replays: what was missed arrives exactly once, then the job's end.
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="drained", after=events_of(before, "drained")[-1]["id"])
        after = await socket.until_end("drained")
    assert after[0] == {"type": "subscribed", "job": "drained"}
    got = events_of(before, "drained") + events_of(after, "drained")
    assert [f["id"] for f in got] == await stream_ids(redis_client, keys, "drained")


async def test_a_subscription_the_client_cannot_keep_up_with_ends_too_slow_and_resumes_exactly(
    start_api, settings, events, redis_client, keys
):
    api = await start_api(msgspec.structs.replace(settings, ws_queue_size=5))
    await finished_job(events, "flood", steps=40)
    expected = await stream_ids(redis_client, keys, "flood")
    got: list[str] = []
    rounds = 0
    async with open_socket(api.url) as socket:
        while True:
            rounds += 1
            await socket.send(op="subscribe", job="flood", after=got[-1] if got else None)
            frames = await socket.until_end("flood")
            got += [f["id"] for f in events_of(frames, "flood")]
            if frames[-1]["reason"] == "terminal":
                break
            assert frames[-1]["reason"] == "too slow"
    assert got == expected, "each round resumed where the last one's frames stopped: no loss, no repeat"
    assert rounds > 2, "a replay of 49 events does not fit a queue of 5 frames"


async def test_the_outbox_refuses_offers_when_full_but_queues_ends_and_flags_a_client_that_reads_nothing():
    outbox = Outbox(2)
    assert outbox.offer(b"1") and outbox.offer(b"2")
    assert not outbox.offer(b"3"), "full: the subscription offering it ends too slow"
    outbox.force(b"end")
    outbox.force(b"end")
    assert not outbox.overrun.is_set()
    outbox.force(b"end")
    assert outbox.overrun.is_set(), "past twice its size the socket is closed"
    assert [await outbox.next() for _ in range(5)] == [b"1", b"2", b"end", b"end", b"end"]
    assert outbox.pop() is None

async def test_ping_is_answered_with_pong(api):
    async with open_socket(api.url) as socket:
        await socket.send(op="ping")
        assert await socket.next() == {"type": "pong"}


async def test_a_plain_get_of_ws_is_426_and_the_schema_describes_the_protocol(client):
    response = await client.get("/ws")
    assert response.status_code == 426
    assert response.json()["error"] == "upgrade_required"
    assert response.headers["upgrade"] == "websocket"
    path = (await client.get("/schema/openapi.json")).json()["paths"]["/ws"]
    assert '{"op":"subscribe","job":ID' in path["get"]["description"]


# --- Redis going away (a throwaway redis-server, never the shared one) ---


async def test_redis_going_away_ends_subscriptions_and_resubscribing_after_it_is_back_resumes_exactly(
    start_api, settings, durable_redis
):
    api = await start_api(msgspec.structs.replace(settings, redis_url=durable_redis.url, redis_timeout_s=1.0))
    events = api.services.events
    await running_job(events, "outage")
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="outage", after=None)
        before = await socket.until(lambda f: f.get("type") == "started")
        durable_redis.kill()
        end = await socket.until_end("outage")
        assert end[-1]["reason"] == "event store unavailable"
        await socket.send(op="subscribe", job="outage", after=events_of(before, "outage")[-1]["id"])
        assert (await socket.next())["reason"] == "event store unavailable", "while Redis is away, at once"
    async with open_socket(api.url) as socket:
        code, _ = await socket.closed()
        assert code == 4503, "no slot can be taken while Redis is away"
    durable_redis.start()
    await progress(events, "outage", 1, 1)
    await events.append("outage", EventType.SUCCEEDED, {"result": 1})
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="outage", after=events_of(before, "outage")[-1]["id"])
        after = await socket.until_end("outage")
    assert [f["type"] for f in after] == ["subscribed", "progress", "succeeded", "end"]
    assert after[-1]["reason"] == "terminal"
    client = api.services.redis
    ids = [entry_id for entry_id, _ in await client.xrange(api.services.keys.events("outage"))]
    assert [f["id"] for f in events_of(before + after, "outage")] == ids


# --- `jobtrail serve` as a process ---


async def test_a_sockets_token_never_reaches_the_serve_log(settings, tmp_path):
    key = new_key()
    process, url = serve(settings, tmp_path, JOBTRAIL_API_KEYS=f"acme:{hash_key(key)}")
    try:
        await wait_ready(process, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            token = await token_for(http, key, None)
        async with open_socket(url, token=token) as socket:
            await socket.send(op="ping")
            assert await socket.next() == {"type": "pong"}
        async with open_socket(url, token=token + "x") as socket:
            code, _ = await socket.closed()
            assert code == 4401
    finally:
        process.terminate()
        process.wait(15)
    log = next(tmp_path.glob("serve-*.log")).read_text()
    assert "/ws?token=[redacted]" in log, "uvicorn's WebSocket lines are still written, redacted"
    assert token not in log and token.split(".")[1] not in log



async def test_a_subscription_that_fails_unexpectedly_ends_and_the_socket_goes_on(api, redis_client, keys):
    # A feed entry without its fields: decoding it is a bug-shaped failure, not a Redis one.
    await redis_client.xadd(keys.activity(), {"junk": "1"})
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", feed=True, after="0-0")
        frames = await socket.until_end(feed=True)
        assert frames[-1] == {"type": "end", "feed": True, "reason": "event store unavailable"}
        await socket.send(op="ping")
        assert await socket.next() == {"type": "pong"}


async def test_sigterm_ends_each_subscription_with_server_stopping_before_the_socket_closes(
    settings, tmp_path, events
):
    process, url = serve(settings, tmp_path, JOBTRAIL_AUTH="off")
    try:
        await wait_ready(process, url)
        await running_job(events, "sig")
        async with open_socket(url) as socket:
            await socket.send(op="subscribe", job="sig", after=None)
            await socket.send(op="subscribe", feed=True, after=None)
            await socket.until(lambda _: {"started", "subscribed-feed"} <= {
                "subscribed-feed" if f.get("feed") else f.get("type") for f in socket.received
            })
            process.terminate()
            await socket.closed()
        ends = [f for f in socket.received if f["type"] == "end"]
        assert {(f.get("job"), f.get("feed"), f["reason"]) for f in ends} == {
            ("sig", None, "server stopping"), (None, True, "server stopping"),
        }
    finally:
        process.terminate()
        process.wait(15)


async def test_a_peer_that_stops_answering_pings_is_dropped_and_its_slot_given_back(
    settings, tmp_path, redis_client, keys
):
    process, url = serve(settings, tmp_path, JOBTRAIL_AUTH="off", JOBTRAIL_WS_PING_S="0.5")
    try:
        await wait_ready(process, url)
        host, port = url.removeprefix("http://").split(":")
        # A handshake by hand, then silence: no pong ever goes back, as from a peer that vanished.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        await writer.drain()
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)).startswith(b"HTTP/1.1 101")
        slots = keys.sse_slots("*")  # the open principal's scope
        deadline = time.monotonic() + 15
        while await redis_client.zcard(slots) != 1:
            assert time.monotonic() < deadline, "the socket never took its slot"
            await asyncio.sleep(0.05)
        while await redis_client.zcard(slots) != 0:
            assert time.monotonic() < deadline, "a peer that answers no ping was not dropped"
            await asyncio.sleep(0.05)
        writer.close()
    finally:
        process.terminate()
        process.wait(15)

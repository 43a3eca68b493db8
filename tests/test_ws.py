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
import websockets

from jobtrail.auth import hash_key
from jobtrail.events import EventType, SubmittedData
from tests.support.jobs import eventually, finished_job, progress, running_job, stream_ids
from tests.support.ws import events_of, open_socket

ACME, GLOBEX, ADMIN = "acme-key", "globex-key", "admin-key"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secured(settings):
    return msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(ACME)}, globex:{hash_key(GLOBEX)}, *:{hash_key(ADMIN)}"
    )


async def tenant_job(events, job_id: str, tenant: str) -> None:
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1),
                        tenant=tenant)


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

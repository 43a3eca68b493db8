"""Redis going away and coming back, on a throwaway redis-server (never the shared one).

The API answers 503 with Retry-After while Redis is down, never 500 and never a silent
switch to memory; it serves again by itself once Redis is back.

The tests marked `@over_topologies` run on a Sentinel group and a Cluster too, where
"Redis down" is every data server of the group stopped (replicas first, so that none
takes over; data saved, as the one server's append-only file keeps it) and then started
again (tests/support/topologies.py, WholeGroupDown): the same behaviour is expected.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from jobtrail.config import Settings
from jobtrail.keys import Keys
from tests.support.env import ROOT, worker_env
from tests.support.redis_server import RedisServer, free_port
from tests.support.sse import Message, collect, messages
from tests.support.topologies import WholeGroupDown, over_topologies

RECOVER_S = 15.0  # the hub backs off up to 5 s between reconnects
DEMO = {"kind": "demo", "params": {"steps": 2, "delay_ms": 10}}


@pytest.fixture
def server(redis_to_take_down: RedisServer | WholeGroupDown) -> RedisServer | WholeGroupDown:
    return redis_to_take_down


@pytest.fixture
def settings(settings: Settings, server: RedisServer) -> Settings:
    """The usual test settings, on the throwaway server, with a short Redis timeout."""
    return msgspec.structs.replace(settings, redis_url=server.url, redis_timeout_s=1.0)


@pytest.fixture
async def client(
    settings: Settings, start_api: Callable[[Settings], Awaitable[Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    api = await start_api(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        yield http


async def submit(client: httpx.AsyncClient) -> str:
    response = await client.post("/jobs", json=DEMO)
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = RECOVER_S) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        await asyncio.sleep(0.1)


async def answers(client: httpx.AsyncClient, method: str, path: str, status: int, **kwargs: Any) -> bool:
    return (await client.request(method, path, **kwargs)).status_code == status


async def succeeded(client: httpx.AsyncClient, job_id: str) -> bool:
    response = await client.get(f"/jobs/{job_id}")
    return response.status_code == 200 and response.json()["state"] == "succeeded"


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.method, response.request.url, response.text)
    assert response.json()["error"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) > 0


@over_topologies
async def test_requests_answer_503_with_retry_after_while_redis_is_down(client, server):
    job_id = await submit(client)
    server.kill()

    for method, path, body in [
        ("GET", "/jobs/x", None),
        ("POST", "/jobs", DEMO),
        ("GET", f"/jobs/{job_id}/events", None),
        ("GET", f"/jobs/{job_id}", None),
        ("GET", f"/jobs/{job_id}/history", None),
        ("GET", "/jobs", None),
        ("POST", f"/jobs/{job_id}/cancel", None),
        ("DELETE", f"/jobs/{job_id}", None),
    ]:
        started = time.monotonic()
        assert_unavailable(await client.request(method, path, json=body))
        assert time.monotonic() - started < 5, f"{method} {path} took too long to give up"
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "Retry-After" in ready.headers


@over_topologies
async def test_a_reconnect_while_redis_is_down_gets_a_retry_hint_instead_of_503(client, server):
    job_id = await submit(client)
    server.kill()

    for path in (f"/jobs/{job_id}/events", "/events"):
        # EventSource gives up for good on a 503; a reconnect is told to come back instead.
        response = await client.get(path, headers={"Last-Event-ID": "1-0"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.text == "retry: 2000\n: event store unavailable; reconnect to resume\n\n"
        assert_unavailable(await client.get(path))  # a first connect still learns the status


@over_topologies
async def test_api_serves_again_by_itself_after_redis_restarts(client, server):
    before = await submit(client)
    server.kill()
    assert_unavailable(await client.get(f"/jobs/{before}"))

    server.start()

    await eventually(lambda: answers(client, "GET", "/readyz", 200), "readiness")
    # Once ready, the first try works: no connection left over from before the restart fails it.
    job_id = await submit(client)
    assert (await client.get(f"/jobs/{before}")).json()["state"] == "pending"
    # SSE, live tail included: the stream is open (submitted seen) before the job changes.
    async with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        got: list[Message] = []
        async with asyncio.timeout(RECOVER_S):
            async for message in messages(response):
                if not message.data:
                    continue
                got.append(message)
                if message.event == "submitted":
                    cancel = await client.post(f"/jobs/{job_id}/cancel")
                    assert cancel.status_code == 202, cancel.text
    assert [m.event for m in got] == ["submitted", "cancelled"]


@over_topologies
async def test_sse_stream_ends_when_redis_dies_and_resumes_by_last_event_id_after_restart(client, server, settings):
    job_id = await submit(client)
    opened = asyncio.Event()

    async def read_until_closed() -> list[Message]:
        seen = []
        async with client.stream("GET", f"/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            async for message in messages(response):
                seen.append(message)
                if message.event == "submitted":
                    opened.set()
        return seen

    reader = asyncio.create_task(read_until_closed())
    await asyncio.wait_for(opened.wait(), 10)
    server.kill()

    seen = await asyncio.wait_for(reader, 10)  # the server ended the stream; it did not hang
    assert [m.event for m in seen if m.data] == ["submitted"]
    goodbye = seen[-1]
    assert any("unavailable" in comment for comment in goodbye.comments)
    assert goodbye.retry == settings.sse_retry_ms  # the client is told when to come back
    last_id = [m.id for m in seen if m.id][-1]
    server.start()
    await eventually(lambda: answers(client, "GET", f"/jobs/{job_id}", 200), "reading the job again")
    assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 202
    resumed = await asyncio.wait_for(collect(client, f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_id}), 10)
    assert [m.event for m in resumed] == ["cancelled"]


@over_topologies
async def test_api_started_without_redis_answers_503_and_never_falls_back_to_memory(server, start_api, settings):
    server.kill()
    api = await start_api(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as cold:
        assert_unavailable(await cold.post("/jobs", json=DEMO))
        assert_unavailable(await cold.get("/jobs/x"))
        assert (await cold.get("/readyz")).status_code == 503
        assert (await cold.get("/healthz")).status_code == 200

        server.start()

        await eventually(lambda: answers(cold, "POST", "/jobs", 202, json=DEMO), "a submission")


@pytest.mark.e2e
async def test_job_queued_before_the_broker_group_exists_runs_when_a_worker_starts(
    server, start_api, settings, start_worker
):
    # An API that starts while Redis is away cannot declare the broker's consumer
    # group, so the job below is queued before any group exists: the first worker
    # must create the group from the start of the queue, not from its end.
    server.kill()
    api = await start_api(settings)
    server.start()
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        await eventually(lambda: answers(http, "GET", "/readyz", 200), "readiness")
        job_id = await submit(http)

        start_worker()

        await eventually(lambda: succeeded(http, job_id), "the job succeeding")


def test_worker_with_unreachable_redis_exits_nonzero_with_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    env = worker_env(Settings(redis_url=f"redis://127.0.0.1:{port}/0", prefix="unused"))

    result = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "cannot reach Redis" in result.stderr, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr, "a clear one-line error, not a stack trace"
    assert "consuming" not in result.stderr + result.stdout


async def test_submit_queues_the_job_on_the_connection_it_holds_when_redis_takes_no_new_one(client, server, settings):
    # Redis at maxclients: the API appends, indexes and queues on the connection its pool
    # already holds. (Its broker once had a pool of its own, whose connection, dropped, could
    # not be opened again: the job was written, its enqueue refused.)
    admin = aioredis.Redis.from_url(server.url, decode_responses=True, client_name="test-admin")
    try:
        await submit(client)  # the API's pool holds an open connection now
        names = [conn["name"] for conn in await admin.client_list()]
        assert not [name for name in names if name.startswith("jobtrail-broker-")], names
        await admin.config_set("maxclients", len(names))

        job_id = await submit(client)

        queued = await admin.xrange(Keys(settings.prefix).queue())
        assert any(job_id in fields["data"] for _, fields in queued), queued
    finally:
        await admin.config_set("maxclients", 10000)
        await admin.aclose()


@pytest.mark.e2e
@over_topologies
async def test_worker_waits_out_a_redis_restart_then_runs_new_jobs(client, server, start_worker, tmp_path):
    start_worker()
    first = await submit(client)
    await eventually(lambda: succeeded(client, first), "the first job succeeding")
    log = tmp_path / "worker-0.log"
    lines_before = len(log.read_text().splitlines())

    server.kill()
    await asyncio.sleep(2)
    server.start()

    await eventually(lambda: answers(client, "GET", "/readyz", 200), "readiness")
    job_id = await submit(client)
    await eventually(lambda: succeeded(client, job_id), "a job submitted after the restart succeeding")
    logged = len(log.read_text().splitlines()) - lines_before
    assert logged < 200, f"the worker spun while Redis was down: {logged} log lines in about 2 s"


@pytest.mark.e2e
async def test_worker_recreates_its_consumer_group_after_redis_loses_its_data(client, server, start_worker):
    start_worker()
    first = await submit(client)
    await eventually(lambda: succeeded(client, first), "the first job succeeding")
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.flushall()  # as a restart without persistence, or a failover to an empty replica
    finally:
        await admin.aclose()

    job_id = await submit(client)

    await eventually(lambda: succeeded(client, job_id), "a job submitted after the data loss succeeding")


async def test_submit_loads_its_scripts_again_after_redis_forgot_them(client, server):
    await submit(client)  # the submission limit's script and the append's are loaded now
    admin = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        await admin.script_flush()  # as after a restart without persistence, or a failover to a fresh replica
        job_id = await submit(client)
        assert (await client.get(f"/jobs/{job_id}")).status_code == 200
    finally:
        await admin.aclose()

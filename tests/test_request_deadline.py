"""A stalled Redis (DEBUG SLEEP) bounds every request by JOBTRAIL_REDIS_TIMEOUT_S, then the API recovers.

On a throwaway redis-server: a stall blocks the whole server, so never the shared one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from jobtrail.config import Settings
from tests.support.redis_server import RedisServer

TIMEOUT_S = 2.0
MARGIN_S = 2.0  # two cores shared with other test runs: generous, and still far below 2 x the timeout
STALL_S = 7


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", None, "--enable-debug-command", "local").start()
    yield server
    server.kill()


@pytest.fixture
def settings(settings: Settings, server: RedisServer) -> Settings:
    return msgspec.structs.replace(settings, redis_url=server.url, redis_timeout_s=TIMEOUT_S)


@pytest.fixture
async def client(
    settings: Settings, start_api: Callable[[Settings], Awaitable[Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    api = await start_api(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        yield http


def stall(server: RedisServer, seconds: int) -> None:
    """Block the whole server for `seconds` (DEBUG SLEEP answers once it is over)."""
    with redis.Redis(port=server.port, socket_timeout=seconds + 30) as admin:
        admin.execute_command("DEBUG", "SLEEP", seconds)


async def timed(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.request(method, path, **kwargs)
    return response, time.monotonic() - started


async def test_a_stalled_redis_answers_503_within_the_timeout_and_the_api_recovers(client, server):
    submitted = await client.post("/jobs", json={"kind": "demo", "params": {}})
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    # A token first: checking one needs the signing key, which this process now holds.
    token = (await client.post(f"/jobs/{job_id}/tokens")).json()["token"]

    stalled = asyncio.create_task(asyncio.to_thread(stall, server, STALL_S))
    await asyncio.sleep(0.5)  # DEBUG SLEEP has reached the server
    requests = [
        ("POST", "/jobs", {"json": {"kind": "demo", "params": {}}}),
        ("GET", f"/jobs/{job_id}", {}),
        ("GET", "/jobs", {}),
        ("GET", f"/jobs/{job_id}/history", {"params": {"token": token}}),
        ("GET", f"/jobs/{job_id}/events", {}),  # before its first byte, an SSE stream is bounded too
        ("POST", f"/jobs/{job_id}/cancel", {}),
        ("DELETE", f"/jobs/{job_id}", {}),
        ("GET", "/readyz", {}),
    ]
    answers = await asyncio.gather(*(timed(client, method, path, **kw) for method, path, kw in requests))

    for (method, path, _), (response, took) in zip(requests, answers, strict=True):
        assert took < TIMEOUT_S + MARGIN_S, f"{method} {path} answered after {took:.1f}s ({response.status_code})"
        assert response.status_code == 503, (method, path, response.text)
        if path == "/readyz":
            assert response.json() == {"status": "redis unavailable"}, "the probe's own answer"
            continue
        assert response.json()["error"] == "store_unavailable"
        assert int(response.headers["Retry-After"]) > 0
        assert response.headers["x-request-id"]
    assert not stalled.done(), "the stall outlasted the requests, so they met a stalled Redis"

    await stalled
    # Recovery: the connections cut at the deadline were dropped, not handed out again half-read.
    deadline = time.monotonic() + 15
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the API did not recover after the stall"
        await asyncio.sleep(0.1)
    again = await client.post("/jobs", json={"kind": "demo", "params": {}})
    assert again.status_code == 202, again.text
    assert (await client.get(f"/jobs/{job_id}")).status_code == 200
    assert len((await client.get("/jobs")).json()["jobs"]) >= 2

"""A job seen through the public HTTP API, as a client sees it: submit, status, wait, history."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

# Bounds for waits: generous for a loaded machine, short enough that a hang fails fast.
FINISH_S = 20.0


async def submit(client: httpx.AsyncClient, params: dict[str, Any], **extra: Any) -> str:
    response = await client.post("/jobs", json={"kind": "demo", "params": params, **extra})
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def status(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for_state(
    client: httpx.AsyncClient, job_id: str, states: set[str], timeout: float = FINISH_S
) -> dict[str, Any]:
    """Poll the job's status until its state is one of `states`; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        job = await status(client, job_id)
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['state']} after {timeout}s, expected one of {sorted(states)}")
        await asyncio.sleep(0.05)


async def history(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, following history pages."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        response = await client.get(f"/jobs/{job_id}/history", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["events"]
        if page["next"] is None:
            return found
        after = page["next"]

"""End to end: the API in this process, real `jobtrail worker` processes, one real Redis.

Everything is observed through the public HTTP API (status, history, SSE), the way a
client would see it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.api import FINISH_S, history, status, submit, wait_for_state
from tests.support.sse import collect
from tests.support.topologies import over_hub_topologies, over_topologies
from tests.support.worker_procs import wait_until_listening

# The API in this process and real workers, on one server, a Sentinel group and a Cluster
# (the tests that read an SSE tail: not on a Cluster until the hub runs there).
pytestmark = pytest.mark.e2e

TERMINAL = {"succeeded", "failed", "cancelled"}


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "progress"]


@over_hub_topologies
async def test_demo_job_streams_progress_to_success_and_status_shows_result(client, start_worker):
    start_worker()
    job_id = await submit(client, {"steps": 10, "delay_ms": 20})

    got = await asyncio.wait_for(collect(client, f"/jobs/{job_id}/events"), FINISH_S)

    kinds = [m.event for m in got]
    assert kinds[:2] == ["submitted", "started"]
    assert kinds[-1] == "succeeded"
    assert set(kinds[2:-1]) == {"progress"}
    progress = [m.json["data"]["progress"] for m in got if m.event == "progress"]
    assert progress == sorted(set(progress)), f"progress must strictly increase: {progress}"
    assert progress[-1] == 1.0
    assert len(progress) >= 2
    job = await status(client, job_id)
    assert job["state"] == "succeeded"
    assert job["progress"] == 1.0
    assert job["result"] == {"steps": 10}
    assert job["attempt"] == 1


@over_topologies
async def test_failing_job_is_retried_once_then_fails_with_its_error(client, start_worker, settings):
    start_worker()
    job_id = await submit(client, {"steps": 3, "delay_ms": 10, "fail_at_step": 2}, max_attempts=2)

    job = await wait_for_state(client, job_id, TERMINAL)

    assert job["state"] == "failed"
    assert job["error"]["type"] == "DemoFailure"
    assert job["attempt"] == 2
    events = await history(client, job_id)
    assert types(events) == ["submitted", "started", "retrying", "started", "failed"]
    retrying = next(e for e in events if e["type"] == "retrying")
    assert retrying["data"]["error"]["type"] == "DemoFailure"
    assert "fail_at_step" in retrying["data"]["error"]["message"]
    assert retrying["data"]["delay_s"] == settings.retry_base_s
    assert retrying["data"]["next_attempt"] == 2
    second_start = [e for e in events if e["type"] == "started"][1]
    assert second_start["attempt"] == 2
    assert second_start["data"]["attempt"] == 2
    failed = events[-1]
    assert failed["data"]["error"]["type"] == "DemoFailure"


@over_hub_topologies
async def test_cancelling_a_running_job_stops_it_and_ends_its_stream(client, start_worker):
    start_worker()
    job_id = await submit(client, {"steps": 400, "delay_ms": 50})
    deadline = time.monotonic() + FINISH_S
    while (job := await status(client, job_id))["progress"] == 0:  # running, handler inside its loop
        assert time.monotonic() < deadline, f"job never made progress: {job}"
        await asyncio.sleep(0.05)
    assert job["state"] == "running"
    stream = asyncio.create_task(asyncio.wait_for(collect(client, f"/jobs/{job_id}/events"), FINISH_S))

    response = await client.post(f"/jobs/{job_id}/cancel", json={"reason": "test"})

    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True
    job = await wait_for_state(client, job_id, TERMINAL, timeout=5)
    assert job["state"] == "cancelled"
    assert job["progress"] < 1.0
    got = await stream  # returns only because the server closed the stream
    kinds = [m.event for m in got]
    assert kinds[-1] == "cancelled"
    assert "cancel_requested" in kinds
    assert kinds.index("cancel_requested") < kinds.index("cancelled")
    again = await client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "transition_refused"


@over_topologies
async def test_cancelled_pending_job_is_never_started_by_a_later_worker(client, start_worker):
    job_id = await submit(client, {"steps": 2, "delay_ms": 10})

    response = await client.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 202, response.text
    assert response.json()["state"] == "cancelled"
    assert (await status(client, job_id))["state"] == "cancelled"
    start_worker()
    # A job queued after the cancelled one: once it has run, the worker has seen both deliveries.
    marker = await submit(client, {"steps": 1, "delay_ms": 0})
    assert (await wait_for_state(client, marker, TERMINAL))["state"] == "succeeded"
    await asyncio.sleep(0.5)
    assert (await status(client, job_id))["state"] == "cancelled"
    assert "started" not in types(await history(client, job_id))


@over_topologies
async def test_job_submitted_before_any_worker_runs_once_a_worker_starts(client, start_worker):
    job_id = await submit(client, {"steps": 3, "delay_ms": 10})
    await asyncio.sleep(0.3)
    assert (await status(client, job_id))["state"] == "pending"

    start_worker()

    job = await wait_for_state(client, job_id, TERMINAL)
    assert job["state"] == "succeeded"
    assert types(await history(client, job_id)) == ["submitted", "started", "succeeded"]


@over_topologies
async def test_two_workers_share_the_jobs_and_run_each_exactly_once(client, start_worker, tmp_path):
    start_worker()
    start_worker()
    for n in range(2):
        await wait_until_listening(tmp_path / f"worker-{n}.log")
    job_ids = []
    for _ in range(6):  # spaced, so the idle worker is the one waiting when the next job arrives
        job_ids.append(await submit(client, {"steps": 5, "delay_ms": 30}))
        await asyncio.sleep(0.1)

    finished = [await wait_for_state(client, job_id, TERMINAL) for job_id in job_ids]

    assert [job["state"] for job in finished] == ["succeeded"] * 6
    workers = set()
    for job_id in job_ids:
        events = await history(client, job_id)
        assert types(events) == ["submitted", "started", "succeeded"], job_id
        workers.add(events[1]["data"]["worker"])
    assert len(workers) == 2, f"both workers should have run jobs, got {workers}"

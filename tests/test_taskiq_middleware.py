"""A team's own taskiq app with jobtrail's middleware: its tasks become jobs the API serves.

The app is tests/user_taskiq_app: its own RedisStreamBroker and queue, taskiq's
SmartRetryMiddleware, its worker a `taskiq worker` process. This test process is the
app's producer (it kicks with `task.kiq(...)`) and runs jobtrail's API on a real port;
everything about the jobs is read through that API.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from jobtrail.config import Settings
from tests.support.env import ROOT
from tests.support.pdf import pdf_text
from tests.support.sse import collect

pytestmark = pytest.mark.e2e

FINISH_S = 30.0
# Nothing listens here: a Redis that is down.
DEAD_REDIS = "redis://127.0.0.1:1/0"
TASKIQ = str(Path(sys.executable).with_name("taskiq"))


def app_env(settings: Settings, jobtrail_url: str | None = None) -> dict[str, str]:
    """The user app's configuration: its queue under this test's prefix, jobtrail on the same Redis."""
    assert settings.redis_url
    return {
        "USER_APP_REDIS_URL": settings.redis_url,
        "USER_APP_QUEUE": f"{settings.prefix}:userapp",
        "USER_APP_JOBTRAIL_URL": jobtrail_url or settings.redis_url,
        "USER_APP_JOBTRAIL_PREFIX": settings.prefix,
    }


def import_app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the user's module afresh under `env`, as its producer process would at start."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("tests.user_taskiq_app", None)
    return importlib.import_module("tests.user_taskiq_app")


@pytest.fixture
async def user_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ModuleType]:
    """The user's app in this (producer) process, started the way taskiq's docs say."""
    module = import_app(app_env(settings), monkeypatch)
    await module.broker.startup()
    yield module
    await module.broker.shutdown()


class UserWorker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def listening(self) -> None:
        deadline = time.monotonic() + FINISH_S
        while "Listening started" not in self.output():
            assert self.process.poll() is None, f"taskiq worker exited; log:\n{self.output()}"
            assert time.monotonic() < deadline, f"taskiq worker never listened; log:\n{self.output()}"
            await asyncio.sleep(0.05)


@pytest.fixture
def start_user_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start `taskiq worker tests.user_taskiq_app:broker` as the team would; stopped at teardown."""
    started: list[UserWorker] = []

    async def start(jobtrail_url: str | None = None, **extra: str) -> UserWorker:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBTRAIL_", "USER_APP_"))}
        env |= app_env(settings, jobtrail_url) | extra | {
            "JOBTRAIL_PROGRESS_INTERVAL_S": "0", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        }
        log = tmp_path / f"taskiq-worker-{len(started)}.log"
        with open(log, "wb") as out:
            # A session of its own: the CLI forks its worker processes, and teardown stops them all.
            process = subprocess.Popen(
                [TASKIQ, "worker", "tests.user_taskiq_app:broker", "--workers", "1"],
                cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True,
            )
        worker = UserWorker(process, log)
        started.append(worker)
        await worker.listening()
        return worker

    yield start
    for worker in started:
        # Killed outright: taskiq 0.13's worker does not finish a SIGTERM shutdown while
        # its stream broker waits in a read, and the tests have no use for a graceful stop.
        if worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()


async def job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for(client: httpx.AsyncClient, job_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + FINISH_S
    while not check(state := await job(client, job_id)):
        assert time.monotonic() < deadline, f"job {job_id} never got there; it is {state}"
        await asyncio.sleep(0.05)
    return state


async def history(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/jobs/{job_id}/history", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["events"]


def kinds_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "progress"]


async def test_a_kicked_task_is_a_job_from_submitted_to_succeeded_with_its_result(client, user_app, start_user_worker):
    await start_user_worker()
    task = await user_app.add.kiq(2, 3)
    assert (await task.wait_result(timeout=FINISH_S)).return_value == 5

    state = await job(client, task.task_id)
    assert state["kind"] == "tests.user_taskiq_app:add"
    assert state["params"] == {"args": [2, 3], "kwargs": {}}
    assert (state["state"], state["result"], state["attempt"], state["max_attempts"]) == ("succeeded", 5, 1, 1)
    events = await history(client, task.task_id)
    assert kinds_of(events) == ["submitted", "started", "succeeded"]
    assert events[1]["data"]["attempt"] == 1
    listed = (await client.get("/jobs")).json()
    assert [j["id"] for j in listed["jobs"]] == [task.task_id]


async def test_a_task_taking_the_context_streams_its_progress_over_sse(client, user_app, start_user_worker):
    await start_user_worker()
    task = await user_app.count_to.kiq(5, 0.02)
    # Opened at once: the job exists as soon as kiq returns.
    events = [m.json for m in await collect(client, f"/jobs/{task.task_id}/events")]

    assert [e["type"] for e in events] == ["submitted", "started", "phase"] + ["progress"] * 5 + ["succeeded"]
    assert [e["data"]["progress"] for e in events[3:8]] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert events[7]["data"] == {"progress": 1.0, "current": 5, "total": 5, "message": "5 of 5"}
    assert events[-1]["data"] == {"result": {"counted": 5}}
    assert {e["attempt"] for e in events[1:]} == {1}
    state = await job(client, task.task_id)
    assert (state["state"], state["phase"], state["progress"]) == ("succeeded", "counting", 1.0)
    assert (await task.wait_result(timeout=FINISH_S)).return_value == {"counted": 5}


async def test_a_failure_the_retry_middleware_retries_is_retrying_then_the_next_attempt_runs(
    client, user_app, start_user_worker
):
    await start_user_worker()
    task = await user_app.flaky.kiq(1)
    assert (await task.wait_result(timeout=FINISH_S)).return_value == "ok on run 2"

    events = await history(client, task.task_id)
    # One `submitted` only: the retry is a second kick of the same task id.
    assert kinds_of(events) == ["submitted", "started", "retrying", "started", "succeeded"]
    assert [e["attempt"] for e in events] == [0, 1, 1, 2, 2]
    retrying = events[2]["data"]
    assert retrying["error"] == {"type": "ConnectionError", "message": "run 1 of a flaky task"}
    assert (retrying["next_attempt"], retrying["delay_s"]) == (2, 0.2)
    state = await job(client, task.task_id)
    assert (state["state"], state["attempt"], state["max_attempts"]) == ("succeeded", 2, 3)
    # The audit report tells both attempts apart like a job of jobtrail's own.
    audit = await client.get(f"/jobs/{task.task_id}/audit.pdf")
    assert audit.status_code == 200, audit.text
    _, text = pdf_text(audit.content)
    assert "tests.user_taskiq_app:flaky" in text and "run 1 of a flaky task" in text


async def test_the_last_failed_attempt_fails_the_job(client, user_app, start_user_worker):
    await start_user_worker()
    task = await user_app.doomed.kiq()
    state = await wait_for(client, task.task_id, lambda s: s["state"] == "failed")

    assert state["error"] == {"type": "ValueError", "message": "this never works"}
    assert (state["attempt"], state["max_attempts"]) == (2, 2)
    assert kinds_of(await history(client, task.task_id)) == ["submitted", "started", "retrying", "started", "failed"]
    assert (await task.wait_result(timeout=FINISH_S)).is_err


async def test_a_permanent_failure_fails_the_job_at_once_and_taskiq_does_not_retry_it(
    client, user_app, start_user_worker
):
    await start_user_worker()
    task = await user_app.refuse.kiq("the input is wrong")
    result = await task.wait_result(timeout=FINISH_S)  # saved, so the retry middleware did not retry it

    assert result.is_err
    state = await job(client, task.task_id)
    assert (state["state"], state["attempt"]) == ("failed", 1)
    assert state["error"] == {"type": "PermanentFailure", "message": "the input is wrong"}
    assert kinds_of(await history(client, task.task_id)) == ["submitted", "started", "failed"]


async def test_cancelling_a_running_task_stops_it_at_its_next_report_without_a_retry(
    client, user_app, start_user_worker
):
    await start_user_worker()
    task = await user_app.count_to.kiq(400, 0.05)
    await wait_for(client, task.task_id, lambda s: s["progress"] > 0)
    response = await client.post(f"/jobs/{task.task_id}/cancel", json={"reason": "enough"})
    assert response.status_code == 202, response.text

    events = [m.json for m in await collect(client, f"/jobs/{task.task_id}/events")]
    assert kinds_of(events) == ["submitted", "started", "phase", "cancel_requested", "cancelled"]
    assert (await task.wait_result(timeout=FINISH_S)).is_err  # count_to retries on error, but not this one
    assert (await job(client, task.task_id))["state"] == "cancelled"


async def test_a_task_cancelled_while_queued_does_not_start(client, user_app, start_user_worker):
    task = await user_app.count_to.kiq(3)
    response = await client.post(f"/jobs/{task.task_id}/cancel")
    assert response.status_code == 202 and response.json()["state"] == "cancelled"

    await start_user_worker()
    result = await task.wait_result(timeout=FINISH_S)
    assert result.is_err and type(result.error).__name__ == "JobCancelled"
    assert kinds_of(await history(client, task.task_id)) == ["submitted", "cancelled"]


async def test_a_task_whose_worker_was_killed_goes_on_with_the_same_attempt_when_taskiq_delivers_it_again(
    client, user_app, start_user_worker
):
    first = await start_user_worker(USER_APP_IDLE_MS="1000")
    task = await user_app.count_to.kiq(40, 0.05)
    await wait_for(client, task.task_id, lambda s: s["progress"] > 0)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()

    await start_user_worker(USER_APP_IDLE_MS="1000")
    await asyncio.sleep(1.2)
    # taskiq-redis claims a message idle past its timeout only after a read that brought a new one.
    nudge = await user_app.add.kiq(1, 1)
    assert (await nudge.wait_result(timeout=FINISH_S)).return_value == 2
    assert (await task.wait_result(timeout=FINISH_S)).return_value == {"counted": 40}
    events = await history(client, task.task_id)
    assert kinds_of(events) == ["submitted", "started", "phase", "phase", "succeeded"]
    assert {e["attempt"] for e in events[1:]} == {1}
    assert (await job(client, task.task_id))["state"] == "succeeded"


async def test_a_worker_records_a_job_its_producer_could_not(
    client, settings, monkeypatch, start_user_worker
):
    producer = import_app(app_env(settings, jobtrail_url=DEAD_REDIS), monkeypatch)
    await producer.broker.startup()
    try:
        await start_user_worker()
        task = await producer.add.kiq(20, 22)  # its `submitted` fails, and the kick does not
        assert (await task.wait_result(timeout=FINISH_S)).return_value == 42
    finally:
        await producer.broker.shutdown()

    state = await job(client, task.task_id)
    assert (state["state"], state["params"], state["result"]) == ("succeeded", {"args": [20, 22], "kwargs": {}}, 42)
    assert kinds_of(await history(client, task.task_id)) == ["submitted", "started", "succeeded"]


async def test_with_jobtrails_redis_down_the_users_tasks_run_and_return_as_before(
    settings, redis_client, monkeypatch, start_user_worker, caplog
):
    producer = import_app(app_env(settings, jobtrail_url=DEAD_REDIS), monkeypatch)
    await producer.broker.startup()
    try:
        worker = await start_user_worker(jobtrail_url=DEAD_REDIS)
        added = await producer.add.kiq(1, 2)
        counted = await producer.count_to.kiq(3)
        assert (await added.wait_result(timeout=FINISH_S)).return_value == 3
        # Its progress reports went nowhere, and did not raise into it.
        assert (await counted.wait_result(timeout=FINISH_S)).return_value == {"counted": 3}
    finally:
        await producer.broker.shutdown()

    assert "submitted not recorded, Redis failed" in caplog.text
    assert f"job {counted.task_id} (tests.user_taskiq_app:count_to): started not recorded" in worker.output()
    assert not await redis_client.exists(f"{settings.prefix}:job:{{{added.task_id}}}")

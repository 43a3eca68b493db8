"""Draining a worker on SIGTERM: running jobs finish, or go to another worker at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import datetime

import msgspec
import pytest

from jobtrail.events import EventType, SubmittedData
from jobtrail.registry import validate_params
from jobtrail.workers.runner import Runner
from tests.support.api import history, status, submit, wait_for_state
from tests.support.env import ROOT, worker_env
from tests.support.worker_procs import Workers

TERMINAL = {"succeeded", "failed", "cancelled"}


async def submitted(events, job_id, params, max_attempts=3):
    data = SubmittedData(kind="demo", params=validate_params("demo", params), max_attempts=max_attempts)
    await events.append(job_id, EventType.SUBMITTED, data)


@pytest.fixture
def handed_off(redis_client, keys):
    """A runner's requeue: records each job and whether its lease was still held then."""
    calls = []

    async def requeue(job_id):
        calls.append((job_id, bool(await redis_client.exists(keys.lease(job_id)))))

    requeue.calls = calls
    return requeue


async def running(events, job_id):
    while (await events.state(job_id)).progress == 0:
        await asyncio.sleep(0.01)


async def test_interrupted_job_is_retried_as_stalled_at_once_and_queued_after_its_lease_is_released(
    events, settings, handed_off
):
    await submitted(events, "j", {"steps": 1000, "delay_ms": 5})
    runner = Runner(events, settings, name="stopping", requeue=handed_off)
    task = asyncio.create_task(runner.run("j"))
    await running(events, "j")

    runner.interrupt()
    await asyncio.wait_for(task, 5)

    last = [e async for e in events.events("j")][-1]
    assert last.type is EventType.RETRYING
    assert last.data["error"]["type"] == "Stalled" and "shut down" in last.data["error"]["message"]
    assert (last.data["delay_s"], last.data["next_attempt"]) == (0.0, 2)
    assert (await events.state("j")).state == "pending"
    assert handed_off.calls == [("j", False)]
    assert runner.deliveries == set()


async def test_interrupted_job_on_its_last_attempt_fails_as_stalled(events, settings, handed_off, redis_client, keys):
    await submitted(events, "j", {"steps": 1000, "delay_ms": 5}, max_attempts=1)
    await redis_client.zadd(keys.live(), {"j": 0})
    runner = Runner(events, settings, name="stopping", requeue=handed_off)
    task = asyncio.create_task(runner.run("j"))
    await running(events, "j")

    runner.interrupt()
    await asyncio.wait_for(task, 5)

    job = await events.state("j")
    assert job.state == "failed" and job.error["type"] == "Stalled"
    assert handed_off.calls == []
    await runner.trailer.flush()  # as a stopping worker does once its deliveries ended
    assert await redis_client.zscore(keys.live(), "j") is None


async def test_job_interrupted_while_waiting_to_retry_is_queued_again(events, settings, handed_off):
    await submitted(events, "j", {"steps": 2, "delay_ms": 0, "fail_at_step": 1})
    runner = Runner(events, msgspec.structs.replace(settings, retry_base_s=30.0), name="stopping", requeue=handed_off)
    task = asyncio.create_task(runner.run("j"))
    while (job := await events.state("j")).state != "pending" or job.attempt == 0:  # retrying written
        await asyncio.sleep(0.01)

    runner.interrupt()
    await asyncio.wait_for(task, 5)

    assert [e.type.value async for e in events.events("j")] == ["submitted", "started", "retrying"]
    assert handed_off.calls == [("j", False)]


# --- end to end ---

@pytest.fixture
def workers(settings, tmp_path):
    started = Workers(settings, tmp_path)
    yield started
    started.close()


async def making_progress(client, job_id):
    deadline = time.monotonic() + 10
    while (await status(client, job_id))["progress"] == 0:
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.05)


def at_s(event):
    return datetime.fromisoformat(event["at"]).timestamp()


def non_progress(events):
    return [e["type"] for e in events if e["type"] != "progress"]


@pytest.mark.e2e
async def test_sigterm_lets_a_running_job_finish_then_exits_0(client, workers):
    worker = await workers.start(JOBTRAIL_SHUTDOWN_TIMEOUT_S="10")
    job_id = await submit(client, {"steps": 15, "delay_ms": 100})
    await making_progress(client, job_id)

    worker.process.send_signal(signal.SIGTERM)

    assert await worker.exited(timeout=10) == 0
    assert (await status(client, job_id))["state"] == "succeeded"
    assert non_progress(await history(client, job_id)) == ["submitted", "started", "succeeded"]


@pytest.mark.e2e
async def test_sigterm_hands_a_job_still_running_at_the_timeout_to_another_worker(client, workers):
    stopping = await workers.start(JOBTRAIL_SHUTDOWN_TIMEOUT_S="1")
    job_id = await submit(client, {"steps": 40, "delay_ms": 100})
    await making_progress(client, job_id)
    await workers.start()

    stopping.process.send_signal(signal.SIGTERM)
    signalled = time.time()

    assert await stopping.exited(timeout=1 + 3) == 0
    assert (await wait_for_state(client, job_id, TERMINAL, timeout=10))["state"] == "succeeded"
    events = await history(client, job_id)
    assert non_progress(events) == ["submitted", "started", "retrying", "started", "succeeded"]
    retrying = next(e for e in events if e["type"] == "retrying")
    assert retrying["data"]["error"]["type"] == "Stalled"
    assert retrying["data"]["delay_s"] == 0
    first, second = (e for e in events if e["type"] == "started")
    assert first["data"]["worker"] != second["data"]["worker"]
    assert at_s(second) - signalled < 1 + 2, "taken over at once, not after the broker's idle timeout"


@pytest.mark.e2e
async def test_second_signal_hands_running_jobs_off_without_waiting(client, workers):
    stopping = await workers.start(JOBTRAIL_SHUTDOWN_TIMEOUT_S="20")
    job_id = await submit(client, {"steps": 40, "delay_ms": 100})
    await making_progress(client, job_id)
    await workers.start()

    stopping.process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    stopping.process.send_signal(signal.SIGINT)

    assert await stopping.exited(timeout=3) == 0
    assert (await wait_for_state(client, job_id, TERMINAL, timeout=10))["state"] == "succeeded"
    assert non_progress(await history(client, job_id)) == ["submitted", "started", "retrying", "started", "succeeded"]


@pytest.mark.e2e
async def test_messages_read_but_not_started_go_back_on_the_queue_at_shutdown(client, workers):
    job_ids = [await submit(client, {"steps": 30, "delay_ms": 100}) for _ in range(3)]
    # With room for one job, the worker reads one message at a time: the other two wait on the queue.
    stopping = await workers.start(
        JOBTRAIL_WORKER_CONCURRENCY="1", JOBTRAIL_SHUTDOWN_TIMEOUT_S="0.5", JOBTRAIL_PENDING_STALE_S="60"
    )
    deadline = time.monotonic() + 10
    while not any([(await status(client, job_id))["progress"] > 0 for job_id in job_ids]):
        assert time.monotonic() < deadline, "no job started"
        await asyncio.sleep(0.05)
    await workers.start(JOBTRAIL_PENDING_STALE_S="60")  # so the reaper is not what finds them

    stopping.process.send_signal(signal.SIGTERM)
    signalled = time.time()

    assert await stopping.exited(timeout=5) == 0
    never_started_on_the_first = 0
    for job_id in job_ids:
        assert (await wait_for_state(client, job_id, TERMINAL, timeout=10))["state"] == "succeeded"
        events = await history(client, job_id)
        starts = [e for e in events if e["type"] == "started"]
        assert at_s(starts[-1]) - signalled < 0.5 + 2, f"job {job_id} waited for the reaper or the idle timeout"
        never_started_on_the_first += non_progress(events) == ["submitted", "started", "succeeded"]
    assert never_started_on_the_first == 2


async def exit_status_when_terminated_at(marker: bytes, command: list[str], env: dict[str, str], log) -> int:
    """Start `command`, SIGTERM it once its log shows `marker`, and return its exit status."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while marker not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)

        process.send_signal(signal.SIGTERM)

        return await asyncio.to_thread(process.wait, 20)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.e2e
async def test_sigterm_while_the_worker_starts_is_a_clean_stop(settings, tmp_path):
    """An orchestrator may stop a worker that is still importing its kinds: exit 0, not death by SIGTERM."""
    log = tmp_path / "worker.log"
    env = worker_env(settings) | {"JOBTRAIL_KINDS": "tests.user_kinds.slow_import"}
    command = [sys.executable, "-m", "jobtrail.cli", "worker"]
    assert await exit_status_when_terminated_at(b"slow_import: importing", command, env, log) == 0, log.read_text()


# Run as `python -c`: holds the import of the worker's module (taskiq, redis, the runner:
# most of a worker's start-up) until it is signalled, so the SIGTERM lands exactly there.
HOLD_WORKER_IMPORT = """
import importlib.abc, sys, time
class Hold(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "jobtrail.workers.worker":
            print("holding the worker's import", flush=True)
            time.sleep(30)
        return None
sys.meta_path.insert(0, Hold())
from jobtrail.cli import main
sys.exit(main(["worker"]))
"""


@pytest.mark.e2e
async def test_sigterm_while_the_worker_imports_its_own_modules_is_a_clean_stop(settings, tmp_path):
    """Before the worker's loop handles signals (its own imports take most of a second): exit 0 too."""
    log = tmp_path / "worker.log"
    command = [sys.executable, "-c", HOLD_WORKER_IMPORT]
    marker = b"holding the worker's import"
    assert await exit_status_when_terminated_at(marker, command, worker_env(settings), log) == 0, log.read_text()

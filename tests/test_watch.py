"""`jobtrail watch` and `jobtrail submit` in a real terminal (tmux), as a person sees them.

The API runs in this test's event loop on real Redis; the commands run as processes
with no REDIS_URL, since a client needs none. Jobs are driven by appending events, as
in tests/test_sse.py, except where a real worker runs the `demo` kind.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import msgspec
import pytest
import uvicorn

from jobtrail.api.app import create_app
from jobtrail.auth import hash_key
from jobtrail.events import EventType, PhaseData, ProgressData, ReasonData
from jobtrail.services import open_services
from tests.conftest import RunningApi
from tests.support.env import ROOT
from tests.support.jobs import finished_job, running_job
from tests.support.terminal import Terminal

pytestmark = pytest.mark.e2e


def jobtrail(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobtrail.cli", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def api_on(settings, port: int) -> RunningApi:
    """The API on a port of our choosing, so a restarted one answers where the old one did."""
    services = open_services(settings, role="api")
    config = uvicorn.Config(create_app(settings, services), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return RunningApi(server, task, f"http://127.0.0.1:{port}", services)


@pytest.fixture
async def terminal():
    term = Terminal()
    yield term
    await term.close()


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A command without a terminal: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *jobtrail(*args), cwd=ROOT, env={"PATH": "/usr/bin:/bin", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_watch_shows_phase_and_message_and_resumes_after_the_api_restarts(settings, events, terminal):
    port = free_port()
    apis = [await api_on(settings, port)]
    try:
        await running_job(events, "report")
        await events.append("report", EventType.PHASE, PhaseData(phase="render"))
        await events.append("report", EventType.PROGRESS, ProgressData(progress=0.3, message="page 3 of 10"))

        await terminal.run(jobtrail("watch", "report"), cwd=str(ROOT), env={"JOBTRAIL_URL": apis[0].url},
                           unset=("REDIS_URL",))
        before = await terminal.wait_for("demo report", "running", "30%", "render", "page 3 of 10")

        await apis[0].stop()  # the API goes away mid-job ...
        down = await terminal.wait_for("reconnecting")
        await events.append("report", EventType.PROGRESS, ProgressData(progress=0.6, message="page 6 of 10"))
        await asyncio.sleep(1)
        apis.append(await api_on(settings, port))  # ... and comes back on the same port
        resumed = await terminal.wait_for("60%", "page 6 of 10", timeout=40)
        await events.append("report", EventType.PROGRESS, ProgressData(progress=1.0, message="page 10 of 10"))
        await events.append("report", EventType.SUCCEEDED, {"result": {"pages": 10}})

        assert await terminal.exit_code() == 0
        final = await terminal.screen()
    finally:
        for api in apis:
            if not api.task.done():
                await api.stop()
    print("\n--- before ---", before, "--- API down ---", down, "--- resumed ---", resumed, "--- end ---", final,
          sep="\n")
    assert "succeeded job report" in final and '{"pages": 10}' in final and "100%" in final


async def test_watch_exits_2_when_the_job_is_cancelled_while_watched(api, client, events, terminal):
    await running_job(events, "stopme")
    await terminal.run(jobtrail("watch", "stopme", "--url", api.url), cwd=str(ROOT), env={}, unset=("REDIS_URL",))
    await terminal.wait_for("running")
    assert (await client.post("/jobs/stopme/cancel", json={"reason": "wrong month"})).status_code == 202
    await terminal.wait_for("cancel requested")
    await events.append("stopme", EventType.CANCELLED, ReasonData(reason="wrong month"))

    assert await terminal.exit_code() == 2
    assert "cancelled job stopme reason: wrong month" in await terminal.screen()


async def test_watch_exit_codes_say_failed_missing_and_refused(start_api, settings, events):
    await running_job(events, "broke")
    await events.append("broke", EventType.FAILED, {"error": {"type": "Boom", "message": "disk full"}})
    await finished_job(events, "fine")
    open_api = await start_api(settings)
    secured = await start_api(msgspec.structs.replace(settings, auth="auto", api_keys=f"acme:{hash_key('jt_k')}"))

    code, out, _ = await run("watch", "broke", "--url", open_api.url)
    assert code == 1 and "failed job broke Boom: disk full" in out
    code, out, _ = await run("watch", "fine", env={"JOBTRAIL_URL": open_api.url})
    assert code == 0 and "succeeded job fine" in out
    code, out, err = await run("watch", "nothing-here", "--url", open_api.url)
    assert (code, out) == (3, "")
    assert err.strip() == "jobtrail watch: job 'nothing-here' does not exist (or has expired)"
    code, _, err = await run("watch", "broke", "--url", secured.url, "--key", "jt_wrong")
    assert code == 4 and len(err.strip().splitlines()) == 1 and "API key" in err
    code, _, err = await run("watch", "broke", "--url", "http://127.0.0.1:9")
    assert code == 5 and "unreachable" in err


async def test_submit_prints_the_job_id(api, client):
    code, out, _ = await run("submit", "demo", "--params", '{"steps": 3}', "--max-attempts", "2",
                             "--idempotency-key", "once", "--url", api.url)
    assert code == 0
    job = (await client.get(f"/jobs/{out.strip()}")).json()
    assert (job["params"]["steps"], job["max_attempts"]) == (3, 2)
    again = await run("submit", "demo", "--params", '{"steps": 3}', "--max-attempts", "2",
                      "--idempotency-key", "once", "--url", api.url)
    assert again[:2] == (0, out), "the same key gives the same job"

    code, _, err = await run("submit", "demo", "--params", "[1, 2]", "--url", api.url)
    assert code == 5 and "JSON object" in err
    code, _, err = await run("submit", "no.such.kind", "--url", api.url)
    assert code == 5 and "422" in err


async def test_submit_watch_follows_a_job_a_real_worker_runs(api, start_worker, terminal, client):
    start_worker()
    params = json.dumps({"steps": 4, "delay_ms": 300})
    await terminal.run(jobtrail("submit", "demo", "--params", params, "--watch", "--url", api.url), cwd=str(ROOT),
                       env={}, unset=("REDIS_URL",))
    assert await terminal.exit_code(timeout=60) == 0
    screen = await terminal.screen()
    print("\n" + screen)
    job_id = screen.split()[0]
    assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "succeeded"
    assert "step 4/4" in screen and "100%" in screen and f"succeeded job {job_id}" in screen

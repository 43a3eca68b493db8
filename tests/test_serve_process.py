"""`jobtrail serve` as a process: refusing to start open, draining SSE on SIGTERM, making keys."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from jobtrail.auth import ApiKeys
from tests.support.env import ROOT
from tests.support.redis_server import free_port
from tests.support.serve import serve, wait_ready
from tests.support.sse import open_stream

pytestmark = pytest.mark.e2e


def test_serve_with_redis_and_no_keys_refuses_to_start(settings, tmp_path):
    process, _ = serve(settings, tmp_path)  # worker_env sets no JOBTRAIL_AUTH
    assert process.wait(30) == 2
    output = (tmp_path / next(p.name for p in tmp_path.iterdir() if p.name.startswith("serve-"))).read_text()
    assert "no API keys are configured" in output and "JOBTRAIL_AUTH=off" in output


def test_keys_new_prints_a_key_and_an_entry_that_accepts_it():
    done = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "keys", "new", "acme"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    lines = [line.strip() for line in done.stdout.splitlines()]
    key, entry = lines[1], lines[3]
    assert key.startswith("jt_") and key not in entry
    assert ApiKeys(ApiKeys.parse(entry, "test")).principal(key).tenant == "acme"


async def test_sigterm_ends_open_sse_streams_cleanly_and_a_client_resumes_elsewhere(settings, tmp_path):
    first, url = serve(settings, tmp_path, JOBTRAIL_AUTH="off")
    try:
        await wait_ready(first, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            job = (await http.post("/jobs", json={"kind": "demo"})).json()  # no worker: it stays pending
            async with open_stream(http, f"/jobs/{job['id']}/events") as stream:
                submitted = await stream.next_event()
                started = time.monotonic()
                first.send_signal(signal.SIGTERM)
                # The stream ends by itself, properly terminated (httpx raises on a cut one).
                rest = [message async for message in _until_closed(stream)]
        assert time.monotonic() - started < 5
        assert any("shutting down" in comment for comment in rest[-1].comments)
        assert rest[-1].retry == settings.sse_retry_ms
        assert not any(message.data for message in rest)
        # uvicorn re-raises the signal once it has shut down, so the exit reads as SIGTERM.
        assert first.wait(10) in (0, -signal.SIGTERM)
    finally:
        if first.poll() is None:
            first.kill()

    second, url = serve(settings, tmp_path, JOBTRAIL_AUTH="off")
    try:
        await wait_ready(second, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.post(f"/jobs/{job['id']}/cancel")
            async with open_stream(
                http, f"/jobs/{job['id']}/events", headers={"Last-Event-ID": submitted.id}
            ) as stream:
                resumed = await stream.rest()
        assert [message.event for message in resumed] == ["cancelled"]
    finally:
        second.terminate()
        second.wait(10)


async def _until_closed(stream):
    while (message := await stream.next(timeout=10)) is not None:
        yield message


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_embedded_serve_keeps_export_files_in_a_temporary_directory_it_removes_at_exit(tmp_path, stop):
    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(temp), PYTHONUNBUFFERED="1")
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "jobtrail.cli", "serve", "--port", str(port)],
                                   cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(process, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            job = (await http.post("/jobs", json={"kind": "export.pdf", "params": {
                "title": "Kept nowhere", "start_date": "2024-01-01", "end_date": "2024-01-07"}})).json()
            for _ in range(300):
                state = (await http.get(f"/jobs/{job['id']}")).json()
                if state["state"] == "succeeded":
                    break
                await asyncio.sleep(0.1)
            assert state["state"] == "succeeded", state
            assert (await http.get(f"/jobs/{job['id']}/artifact")).content.startswith(b"%PDF")
        folders = list(temp.glob("jobtrail-artifacts-*"))
        assert len(folders) == 1 and (folders[0] / job["id"] / "kept-nowhere.pdf").is_file()
        assert f"Export files: {folders[0]} (removed at exit)" in log_path.read_text()
        assert not (cwd / "artifacts").exists(), "nothing is written under the working directory"
        process.send_signal(stop)
        assert process.wait(20) in (0, -stop)
        assert not folders[0].exists(), "the temporary directory is removed at exit"
        assert list(cwd.iterdir()) == []
    finally:
        if process.poll() is None:
            process.kill()


async def test_embedded_serve_with_an_artifact_dir_set_keeps_it_and_says_where(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), JOBTRAIL_ARTIFACT_DIR="exports", PYTHONUNBUFFERED="1")
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "jobtrail.cli", "serve", "--port", str(port)],
                                   cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_ready(process, f"http://127.0.0.1:{port}")
        assert f"Export files are KEPT in {tmp_path / 'exports'}." in log_path.read_text()
    finally:
        process.terminate()
        process.wait(20)


async def test_a_killed_servers_stream_slots_free_within_the_slot_ttl_and_reconnects_keep_trying(settings, tmp_path):
    ttl_s = 8.0  # the 429 check right after the kill must come before the slot's last renewal lapses
    env = dict(JOBTRAIL_AUTH="off", JOBTRAIL_SSE_CONNECTIONS_PER_TENANT="1", JOBTRAIL_SSE_SLOT_TTL_S=str(ttl_s))
    doomed, doomed_url = serve(settings, tmp_path, **env)
    survivor, url = serve(settings, tmp_path, **env)
    try:
        await wait_ready(doomed, doomed_url)
        await wait_ready(survivor, url)
        async with httpx.AsyncClient(timeout=30) as http:
            async with open_stream(http, f"{doomed_url}/events") as stream:
                await stream.next()  # the retry hint: the stream is open, and holds the one slot
                doomed.kill()
                killed = time.monotonic()
                assert doomed.wait(10) == -signal.SIGKILL
            # The dead process's slot still counts; a reconnect is told to come back later.
            assert (await http.get(f"{url}/events")).status_code == 429
            again = await http.get(f"{url}/events", headers={"Last-Event-ID": "1-0"})
            assert again.status_code == 200 and again.text.startswith("retry: ")
            while True:
                async with http.stream("GET", f"{url}/events") as response:
                    if response.status_code == 200:
                        break
                assert time.monotonic() - killed < ttl_s + 10, "the killed server's slot was never freed"
                await asyncio.sleep(0.2)
        assert time.monotonic() - killed < ttl_s + 10
    finally:
        for process in (doomed, survivor):
            if process.poll() is None:
                process.kill()
                process.wait(10)

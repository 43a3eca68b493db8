"""`jobtrail serve` as a process of its own, started the way a user starts it, on a free port."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from tests.support.env import ROOT, worker_env
from tests.support.redis_server import free_port


def serve(settings, tmp_path, port: int | None = None, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `jobtrail serve` on `port` (a free one by default: pass the old one to restart in its place)."""
    port = port or free_port()
    # Appended to: a restart on the same port keeps the first run's log.
    log = open(tmp_path / f"serve-{port}.log", "ab")  # noqa: SIM115 (the process writes it as long as it runs)
    process = subprocess.Popen(
        [sys.executable, "-m", "jobtrail.cli", "serve", "--port", str(port)],
        cwd=ROOT, env={**worker_env(settings), **env}, stdout=log, stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(200):
            assert process.poll() is None, "jobtrail serve exited while starting"
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail("jobtrail serve did not become ready")

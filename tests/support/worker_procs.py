"""`jobtrail worker` processes with settings the `start_worker` fixture does not pass, and their logs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from jobtrail.config import Settings
from tests.support.env import ROOT, worker_env


async def wait_until_listening(log: Path, timeout: float = 20.0) -> None:
    """Wait for a worker process to log that it consumes the queue."""
    deadline = time.monotonic() + timeout
    while not (log.exists() and b"Listening started" in log.read_bytes()):
        assert time.monotonic() < deadline, f"worker never listened; log: {log.read_text(errors='replace')}"
        await asyncio.sleep(0.05)


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def listening(self, timeout: float = 20.0) -> None:
        """Wait until the worker reads the queue."""
        deadline = time.monotonic() + timeout
        while "Listening started" not in self.output():
            assert self.process.poll() is None, f"worker exited early; log:\n{self.output()}"
            assert time.monotonic() < deadline, f"worker never listened; log:\n{self.output()}"
            await asyncio.sleep(0.05)

    async def exited(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code."""
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            assert time.monotonic() < deadline, f"worker still running after {timeout}s; log:\n{self.output()}"
            await asyncio.sleep(0.05)
        return code


class Workers:
    """Starts workers for one test; whatever still runs at teardown is killed."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.started: list[Worker] = []

    async def start(self, **env: str) -> Worker:
        """Start a worker with extra environment variables and wait until it reads the queue."""
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "jobtrail.cli", "worker"], cwd=ROOT, env=worker_env(self.settings) | env,
                stdout=out, stderr=out,
            )
        worker = Worker(process, log)
        self.started.append(worker)
        await worker.listening()
        return worker

    def close(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()

"""Starting the systems a row compares: jobtrail (`jobtrail serve`, `jobtrail worker`), the bare app, BullMQ.

jobtrail runs the way users run it, as its CLI's processes, configured by environment
variables: open access (no keys to send), limits lifted so the bench measures throughput
and not the rate limiter, no progress coalescing (W1 counts every report), the bench's
kinds (bench/kinds.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from subprocess import Popen

from bench.procs import ROOT, Processes
from bench.redis_server import BenchRedis, free_port

NODE_DIR = ROOT / "bench" / ".node"
NODE_PACKAGES = ("bullmq@5", "ioredis@5")
CONCURRENCY = 10  # worker concurrency, the same for jobtrail and BullMQ
# Passed on to jobtrail and to the bare app alike: the loop and HTTP parser both run on
# (app/eventloop.py, app/api/protocol.py), so a run may compare, say, asyncio and h11 too.
SERVER_SETTINGS = ("JOBTRAIL_LOOP", "JOBTRAIL_HTTP")


def _without_jobtrail_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_") or k in SERVER_SETTINGS}


def jobtrail_env(redis: BenchRedis, prefix: str, run_dir: Path) -> dict[str, str]:
    env = _without_jobtrail_settings()
    env.update(
        REDIS_URL=redis.url,
        JOBTRAIL_PREFIX=prefix,
        JOBTRAIL_AUTH="off",
        JOBTRAIL_KINDS="bench.kinds",
        JOBTRAIL_ARTIFACT_DIR=str(run_dir / "artifacts"),
        JOBTRAIL_PROGRESS_INTERVAL_S="0",
        JOBTRAIL_WORKER_CONCURRENCY=str(CONCURRENCY),
        JOBTRAIL_SUBMISSIONS_PER_MINUTE="100000000",
        JOBTRAIL_SSE_CONNECTIONS_PER_TENANT="100000",
        JOBTRAIL_SSE_QUEUE_SIZE="100000",  # W1 and the fan-out rows count deliveries, not drops
        PYTHONUNBUFFERED="1",
    )
    return env


class Jobtrail:
    """One `jobtrail serve` and, unless `worker=False`, one `jobtrail worker`, under a fresh prefix."""

    def __init__(self, procs: Processes, redis: BenchRedis, *, worker: bool = True) -> None:
        self.procs = procs
        self.redis = redis
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.env = jobtrail_env(redis, self.prefix, procs.run_dir)
        self.port = free_port()
        self.with_worker = worker
        self.api: Popen[bytes] | None = None
        self.worker: Popen[bytes] | None = None

    async def start(self) -> Jobtrail:
        self.api = self.procs.python(f"api-{self.port}", ["-m", "jobtrail.cli", "serve", "--port", str(self.port)],
                                     self.env)
        if self.with_worker:
            self.worker = self.procs.python(f"worker-{self.port}", ["-m", "jobtrail.cli", "worker"], self.env)
        await self.procs.wait_http(self.api, f"api-{self.port}", f"http://127.0.0.1:{self.port}/readyz")
        if self.worker is not None:
            await self.procs.wait_log(self.worker, f"worker-{self.port}", "Listening started")
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self.api, self.worker) if p is not None]


class BareApp:
    """bench/bare_app.py under uvicorn, reading jobtrail's keys under `prefix`."""

    def __init__(self, procs: Processes, redis: BenchRedis, prefix: str = "bare") -> None:
        self.procs = procs
        self.env = {**_without_jobtrail_settings(), "REDIS_URL": redis.url, "BENCH_PREFIX": prefix}
        self.port = free_port()
        self.process: Popen[bytes] | None = None

    async def start(self) -> BareApp:
        name = f"bare-{self.port}"
        self.process = self.procs.python(name, ["-m", "bench.bare_app", "--port", str(self.port)], self.env)
        await self.procs.wait_http(self.process, name, f"http://127.0.0.1:{self.port}/readyz")
        return self

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []


def node_installed() -> bool:
    return all((NODE_DIR / "node_modules" / name.split("@")[0]).is_dir() for name in NODE_PACKAGES)


def install_node_packages() -> None:
    """bullmq and ioredis from the npm registry into bench/.node (git-ignored), once."""
    if node_installed():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("BullMQ rows need node and npm (apt-get install nodejs npm)")
    subprocess.run(
        ["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--no-save", *NODE_PACKAGES],
        check=True, timeout=300, stdout=subprocess.DEVNULL,
    )


class BullMQ:
    """A BullMQ Worker process (bench/bullmq_worker.mjs) on its own queue name."""

    def __init__(self, procs: Processes, redis: BenchRedis) -> None:
        self.procs = procs
        self.redis = redis
        self.queue = f"bench{uuid.uuid4().hex[:8]}"
        self.process: Popen[bytes] | None = None

    async def start(self) -> BullMQ:
        install_node_packages()
        name = f"bullmq-worker-{self.queue}"
        argv = ["node", str(ROOT / "bench" / "bullmq_worker.mjs"), str(self.redis.port), self.queue, str(CONCURRENCY)]
        self.process = self.procs.spawn(name, argv, dict(os.environ))
        await self.procs.wait_log(self.process, name, "ready")
        return self

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []

    def producer(self, workload: str, jobs: int, count: int = 0) -> tuple[Popen[bytes], str]:
        name = f"bullmq-producer-{self.queue}-{time.monotonic_ns()}"
        argv = ["node", str(ROOT / "bench" / "bullmq_producer.mjs"), str(self.redis.port), self.queue, workload,
                str(jobs), str(count)]
        return self.procs.spawn(name, argv, dict(os.environ)), name


class Saq:
    """A saq Worker process (bench/saq_side.py) on its own queue name; needs the `bench` extra."""

    def __init__(self, procs: Processes, redis: BenchRedis) -> None:
        self.procs = procs
        self.redis = redis
        self.queue = f"bench{uuid.uuid4().hex[:8]}"
        self.process: Popen[bytes] | None = None

    async def start(self) -> Saq:
        name = f"saq-worker-{self.queue}"
        args = ["-m", "bench.saq_side", "worker", str(self.redis.port), self.queue, str(CONCURRENCY)]
        self.process = self.procs.python(name, args, dict(os.environ))
        await self.procs.wait_log(self.process, name, "ready")
        return self

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []

    def producer(self, jobs: int) -> tuple[Popen[bytes], str]:
        name = f"saq-producer-{self.queue}-{time.monotonic_ns()}"
        args = ["-m", "bench.saq_side", "w3", str(self.redis.port), self.queue, str(jobs)]
        return self.procs.python(name, args, dict(os.environ)), name


def saq_installed() -> bool:
    return importlib.util.find_spec("saq") is not None

"""The bench's own redis-server: a free port, no persistence, never the shared 6379.

bench/ does not import tests/ (a benchmark must run from a checkout without the test
extras), so this is a small sibling of tests/support/redis_server.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchRedis:
    """A redis-server in a temporary directory; a context manager that always kills it."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="jobtrail-bench-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=30)

    def __enter__(self) -> BenchRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--maxclients", "10000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.__exit__()
                        raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.05)

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

"""The bench's own redis-server: a free port, no persistence, never the shared 6379.

tests/support/redis_server.py starts and stops it; this adds the bench's way of holding
it (a context manager over a temporary directory) and what the bench asks of it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, free_port

__all__ = ["BenchRedis", "free_port"]


class BenchRedis:
    """A redis-server in a temporary directory; a context manager that always kills it."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="jobtrail-bench-redis-"))
        try:
            self.server = RedisServer(self.directory, None, "--maxclients", "10000", own_session=True)
        except RuntimeError:  # no redis-server installed
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.port = self.server.port

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=30)

    def __enter__(self) -> BenchRedis:
        try:
            self.server.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.server.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

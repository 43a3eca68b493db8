"""Redis clients: a pooled one for requests and a dedicated one for the hub's blocking read.

With no REDIS_URL both talk to one in-process fakeredis server that runs the same Lua
script; that mode keeps nothing and says so at start (see app/cli.py).
"""

from __future__ import annotations

import os

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from jobtrail.config import Settings


class Store:
    """Opens the Redis clients one process needs, against one server."""

    def __init__(self, settings: Settings, *, role: str = "api") -> None:
        self.settings = settings
        self.client_name = f"jobtrail-{role}-{os.getpid()}"
        self._fake_server = None
        if settings.embedded:
            import fakeredis

            self._fake_server = fakeredis.FakeServer()

    def pooled(self) -> Redis:
        """A client whose pool never holds more than `redis_pool_size` connections.

        Connection errors surface within `redis_timeout_s` (one quick retry first), and
        waiting for a pooled connection is bounded by it too. A request as a whole is
        bounded by the same figure (app/api/bounds.py), so a Redis that hangs rather
        than refuses costs a request one timeout, not one per command and retry.
        """
        if self._fake_server is not None:
            return self._fake()
        s = self.settings
        pool = BlockingConnectionPool.from_url(
            s.redis_url,
            max_connections=s.redis_pool_size,
            timeout=s.redis_timeout_s,
            decode_responses=True,
            socket_connect_timeout=s.redis_timeout_s,
            socket_timeout=s.redis_timeout_s,
            health_check_interval=30,
            client_name=self.client_name,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        )
        # from_pool: closing the client closes the pool; Redis(connection_pool=...) would
        # leave its connections open after shutdown.
        return Redis.from_pool(pool)

    def dedicated(self, block_ms: int) -> Redis:
        """A single-connection client for a blocking read of up to `block_ms`."""
        if self._fake_server is not None:
            return self._fake()
        s = self.settings
        return Redis.from_url(
            s.redis_url,
            max_connections=1,
            decode_responses=True,
            socket_connect_timeout=s.redis_timeout_s,
            socket_timeout=block_ms / 1000 + s.redis_timeout_s,
            client_name=self.client_name,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        )

    def _fake(self) -> Redis:
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=self._fake_server, decode_responses=True)

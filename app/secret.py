"""The server secret: one master key every API process shares, and the keys derived from it.

Tokens are signed with one derived key and the ids of idempotent submissions are keyed
with another (`HMAC(master, purpose)`), so one secret serves both and neither use can
stand in for the other. The master is JOBTRAIL_TOKEN_SECRET when set, which never
changes. Otherwise the first process to need it makes one (SET NX) in Redis at
`keys.server_secret()` and every other process reads that one.

A Redis that lost its data has lost the secret too, and a process still holding the old
one would sign and verify with a key nobody else has. So a process re-reads the secret
(one pipelined SET NX + GET) every `refresh_s` and, at most every `retry_s`, when a
caller asks because a signature did not hold. If the key is gone it puts its own copy
back (SET NX), so tokens it already signed stay good; if another process got there
first, it takes what Redis holds. Processes converge without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobtrail.keys import Keys

log = logging.getLogger(__name__)

REFRESH_S = 30.0  # how stale a process's copy of a Redis-kept secret may get
RETRY_S = 1.0  # how often a failed check may make a process re-read it early


class ServerSecret:
    def __init__(
        self, redis: Redis, keys: Keys, configured: str, *, refresh_s: float = REFRESH_S, retry_s: float = RETRY_S
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.configured = bool(configured)
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self._master: bytes | None = configured.encode() if configured else None
        self._read_at = float("-inf")  # monotonic time of the last read from Redis

    async def key(self, purpose: str) -> bytes:
        """The key for one purpose ("tokens", "job-ids"); re-reads a Redis-kept master once it is stale."""
        if not self.configured and (self._master is None or time.monotonic() - self._read_at >= self.refresh_s):
            try:
                await self._read()
            except RedisError as exc:
                if self._master is None:
                    raise
                # A refresh is a precaution; the copy we hold serves until Redis answers again.
                log.warning("could not re-read the server secret (%s); using the one held", exc)
        assert self._master is not None
        return hmac.new(self._master, purpose.encode(), hashlib.sha256).digest()

    async def reread(self) -> bool:
        """Re-read the master now, if it is kept in Redis and was not read in the last `retry_s`.

        For a check that failed: True when the master changed, so the check is worth
        repeating. At most one round trip per `retry_s`, however many checks fail.
        """
        if self.configured or time.monotonic() - self._read_at < self.retry_s:
            return False
        before = self._master
        await self._read()
        return self._master != before

    async def _read(self) -> None:
        """Make sure Redis holds a master (ours, if it has none) and take that one (one round trip)."""
        # Stamped first: concurrent callers do not pile up reads of their own.
        self._read_at = time.monotonic()
        mine = self._master.decode() if self._master is not None else secrets.token_hex(32)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.server_secret(), mine, nx=True)
            pipe.get(self.keys.server_secret())
            _, held = await pipe.execute()
        self._master = held.encode() if isinstance(held, str) else held

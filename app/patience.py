"""Waiting Redis out: which errors mean "away for now", and how long a worker waits for it.

Redis restarting (loading its files), frozen (`DEBUG SLEEP`, a stopped process, a long
fork), demoted to a read-only replica for a failover, or over `maxmemory` under
`noeviction` all come back by themselves. A worker that fails a job's attempt for that
spends attempts on an outage: a job with `max_attempts` 1 would fail for good. So every
write a worker makes for a job (the runner's appends and loads, the handler's reports
through JobContext, the lease heartbeat) waits Redis out, up to a bound
(`JOBTRAIL_REDIS_OUTAGE_S`), and only then lets the error through.

A retried write must land once. An error Redis answered with (READONLY, OOM, LOADING)
means nothing ran; a timeout or a dropped connection may come after the command ran, so
every append a worker retries carries an idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as redis_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

# "Redis is away for now", not "this call is wrong": the API answers 503 for these, and
# workers wait them out.
REDIS_AWAY: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError: Redis is loading its data
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a failover left us on a replica
    redis_errors.MasterDownError,  # a replica that lost its primary and serves no stale data
    # A Cluster failing over: CLUSTERDOWN while a dead primary's slots are uncovered,
    # TRYAGAIN while a slot moves, and no node known for a slot in the client's map.
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    redis_errors.OutOfMemoryError,  # maxmemory reached under noeviction (ops/redis.conf)
    # A Cluster between a primary's death and its replica's promotion: CLUSTERDOWN, TRYAGAIN
    # (a slot migrating), a slot no node serves yet, redirections that did not settle.
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    redis_errors.ClusterError,
)


class Patience:
    """Retries a Redis call while Redis is away, with a capped exponential backoff, for up to `bound_s`."""

    def __init__(self, bound_s: float, *, first_delay_s: float = 0.1, max_delay_s: float = 2.0) -> None:
        self.bound_s = bound_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s result; while it fails with REDIS_AWAY, try again until `bound_s` has passed, then raise.

        `call` must be safe to repeat (a read, or an append with an idempotency key).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bound_s
        delay = self.first_delay_s
        failures = 0
        while True:
            try:
                result = await call()
            except REDIS_AWAY as exc:
                left = deadline - loop.time()
                if left <= 0:
                    log.error("%s: Redis still away after %.0f s (%s); giving up", what, self.bound_s, exc)
                    raise
                failures += 1
                if failures == 1 or delay >= self.max_delay_s:  # one line per try once the backoff is at its cap
                    log.warning("%s: Redis is away (%s); waiting up to %.0f s more", what, exc, left)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, self.max_delay_s)
                continue
            if failures:
                log.info("%s: Redis is back after %d failed tries", what, failures)
            return result

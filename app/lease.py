"""A job lease: at most one worker runs a job at a time.

The lease is a per-job key holding the runner's token with a short TTL that a
heartbeat renews while the job runs. A second delivery of the job finds it held and
drops itself; a job whose worker died has its lease expire and can be taken over.

Redis away for longer than the TTL lets the lease of a living worker lapse too. The
heartbeat keeps trying meanwhile (sooner than its period), and its first renewal once
Redis answers takes the lapsed lease back if nobody took it and the job is still at the
holder's attempt (lease.lua). The reaper (workers/reaper.py) gives it that time: after
a gap in its passes it takes over no running job until a lease TTL has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from jobtrail.patience import REDIS_AWAY

log = logging.getLogger(__name__)

_SCRIPT = resources.files("jobtrail").joinpath("lease.lua").read_text()


# One registered script per client: registering hashes the script, and a worker makes a
# Lease per delivery.
_SCRIPTS: weakref.WeakKeyDictionary[Any, AsyncScript] = weakref.WeakKeyDictionary()


def _script_of(redis: Redis) -> AsyncScript:
    script = _SCRIPTS.get(redis)
    if script is None:
        script = _SCRIPTS[redis] = redis.register_script(_SCRIPT)
    return script


class Lease:
    def __init__(self, redis: Redis, key: str, owner: str, ttl_s: float, *, job_key: str | None = None) -> None:
        self.redis = redis
        self.key = key
        # The job whose state decides whether a lapsed lease may be taken back; none for
        # a lease that guards no job (the migrations lock), which is never taken back.
        self.job_key = job_key or key
        # os.urandom, not uuid4: the same 32 random bits, without a UUID object made per delivery.
        self.token = f"{owner}:{os.urandom(4).hex()}"
        self.ttl_ms = max(int(ttl_s * 1000), 100)
        self.lost = False
        self.released = False  # by `queue_finish`, in a round trip of the holder's
        # Where the holder is, so a lapsed lease is taken back only for that (see `hold`).
        self.attempt: int | None = None
        self.incarnation: str | None = None
        self._script = _script_of(redis)

    def hold(self, attempt: int, incarnation: str | None) -> None:
        """Record the attempt (and incarnation) the holder runs now."""
        self.attempt, self.incarnation = attempt, incarnation

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (one SET NX)."""
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def queue_acquire(self, pipe: Pipeline) -> None:
        """`acquire` queued on a pipeline of the caller's; its reply is truthy when the lease was taken."""
        pipe.set(self.key, self.token, nx=True, px=self.ttl_ms)

    def queue_finish(self, pipe: Pipeline) -> None:
        """Queue, behind a job's outcome, the release of its lease if the job is finished by then.

        For a pipeline of the caller's that appends the outcome first: an append that did
        not land leaves the lease held. Hand its reply to `settle_finish`.
        """
        # execute_command, not pipe.evalsha: redis-py's Cluster pipeline refuses the method by
        # name, yet routes the command by its keys (one job's: one slot).
        pipe.execute_command("EVALSHA", self._script.sha, 2, self.key, self.job_key, "finish", self.token, 0, "", "")

    def settle_finish(self, reply: object) -> None:
        """From `queue_finish`'s reply: released now (the heartbeat stops, `kept_alive` releases nothing more).

        Anything else (the job not finished, the script not loaded, an error) leaves the
        lease to `kept_alive`, which releases it as the block ends.
        """
        if reply == 1:
            self.released = True

    def release_failed(self, error: BaseException) -> None:
        log.warning("could not release lease %s (%s); it expires by itself", self.key, error)

    async def renew(self) -> bool:
        """Extend the lease, or take it back if it lapsed and nobody took it (one EVALSHA)."""
        attempt = "" if self.attempt is None else self.attempt
        args = ["renew", self.token, self.ttl_ms, attempt, self.incarnation or ""]
        return bool(await self._script(keys=[self.key, self.job_key], args=args))

    async def release(self) -> None:
        await self._script(keys=[self.key, self.job_key], args=["release", self.token, 0, "", ""])

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[Lease]:
        """Renew the lease every third of its TTL until the block ends, then release it.

        The heartbeat's task is made when its first renewal is due: most blocks (a trivial
        job) end before that, and a timer costs a worker less than a task made and cancelled.
        """
        heartbeat: asyncio.Task[None] | None = None

        def beat() -> None:
            nonlocal heartbeat
            heartbeat = asyncio.create_task(self._heartbeat(first_delay_s=0.0))

        timer = asyncio.get_running_loop().call_later(self.ttl_ms / 3000, beat)
        try:
            yield self
        finally:
            timer.cancel()
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            if not self.released:
                try:
                    await self.release()
                except RedisError as exc:
                    self.release_failed(exc)

    async def _heartbeat(self, first_delay_s: float | None = None) -> None:
        period = self.ttl_ms / 3000
        delay, failing = period if first_delay_s is None else first_delay_s, False
        while True:
            await asyncio.sleep(delay)
            try:
                renewed = await self.renew()
                if self.released:
                    return  # given up meanwhile: a renewal that found it gone says nothing
                if not renewed:
                    self.lost = True
                    log.warning("lease %s was lost; the job will be left to its new holder", self.key)
                    return
                if failing:
                    log.info("lease %s renewed again", self.key)
                delay, failing = period, False
            except REDIS_AWAY as exc:
                # Sooner than the period: the lease may lapse meanwhile, and the first
                # renewal once Redis answers is what takes it back.
                if not failing:
                    log.warning("could not renew lease %s (%s); trying until Redis answers", self.key, exc)
                delay = min(delay * 2, 2.0, period) if failing else min(0.25, period)
                failing = True
            except RedisError as exc:
                log.warning("could not renew lease %s: %s", self.key, exc)

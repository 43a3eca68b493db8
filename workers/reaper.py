"""The reaper: queues again the jobs that nothing else would ever move on.

A dead worker's message stays pending for it until someone reclaims it, and a job whose
enqueue failed after its `submitted` has no message at all. Every worker runs this loop,
and a lock lets one of them make the pass of each interval over the due jobs of the live
set (app/livejobs.py):

- finished or gone: forgotten;
- lease held (running, or pending between attempts): looked at again when it would expire;
- running without a lease: its worker died. Queued again; the runner that takes it ends
  the lost attempt as `Stalled` (retrying, or failed when no attempts remain). Except
  after a gap in the passes (more than two intervals: Redis was away, or no worker ran):
  an outage longer than a lease TTL lets the leases of living workers lapse too, and each
  takes its own back at its first heartbeat once Redis answers (app/lease.py). So for
  a lease TTL after a gap a lapsed lease proves nothing, and such jobs are looked at
  again when it has passed;
- pending without a lease, unchanged for `pending_stale_s`: its message was lost. Queued
  again, but only while no queued message waits to be read, so a backlog is not flooded.

A job queued again is due again `pending_stale_s` later: at most one extra message each.

The pass also reclaims the queue's messages left unacknowledged for JOBTRAIL_BROKER_IDLE_MS
(their worker died: they go back on the queue, for any worker; taskiq-redis's own Cluster
broker never does this, taskiq-redis#130), then trims the stream: acknowledged messages are
never removed otherwise, so the queue would grow for ever. What the queue looks like
inside (its stream, its group, what read and acknowledged mean) is workers/queue.py's.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import TERMINAL_STATES, State
from jobtrail.livejobs import LiveJobs, now_ms
from jobtrail.workers.queue import JobQueue
from jobtrail.workers.runner import Requeue

log = logging.getLogger(__name__)


class Reaper:
    # Due jobs looked at per round trip.
    BATCH = 500

    def __init__(self, events: EventLog, requeue: Requeue, settings: Settings, *, group: str, name: str) -> None:
        self.redis = events.redis
        self.keys = events.keys
        self.live = LiveJobs(events.redis, events.keys, settings.pending_stale_s)
        self.requeue = requeue
        self.queue = JobQueue(events.redis, events.keys.queue(), group)
        self.metrics = events.metrics
        self.name = name
        self.interval_ms = int(settings.reaper_interval_s * 1000)
        self.pending_stale_ms = int(settings.pending_stale_s * 1000)
        self.lease_ttl_ms = int(settings.lease_ttl_s * 1000)
        self.message_idle_ms = settings.broker_idle_ms

    async def run(self) -> None:
        """Until cancelled: every half interval, make a pass unless one was made this interval.

        Trying twice per interval keeps passes at most 1.5 intervals apart whichever
        worker makes them, and the lock keeps them at least one interval apart.
        """
        while True:
            await asyncio.sleep(self.interval_ms / 2000)
            try:
                if await self.claim_pass():
                    await self.reap(trust_leases_from=await self.record_pass())
                    await self.reclaim_messages()
                    await self.trim_queue()
            except RedisError:
                log.warning("reaper pass failed; trying again next interval", exc_info=True)
            except Exception:  # a bug must not stop recovery for the life of the worker
                log.exception("reaper pass failed unexpectedly; trying again next interval")

    async def claim_pass(self) -> bool:
        """Take this interval's pass unless another worker took it (one SET NX PX)."""
        return bool(await self.redis.set(self.keys.reaper_lock(), self.name, nx=True, px=self.interval_ms))

    async def record_pass(self, at_ms: int | None = None) -> int:
        """Record a pass at `at_ms` (default now); from when a lapsed lease means a dead worker (two round trips).

        Passes come at most 1.5 intervals apart while Redis answers and a worker runs;
        after a longer gap, every worker's lease may have lapsed in it. No record yet
        (a new prefix) is no gap.
        """
        at = now_ms() if at_ms is None else at_ms
        key = self.keys.reaper_passes()
        last, calm_since = await self.redis.hmget(key, "last", "calm_since")
        if last is None:
            calm = 0
        elif at - int(last) > 2 * self.interval_ms:
            log.warning(
                "no reaper pass for %.1f s (Redis was away, or no worker ran): taking over no running job "
                "for %.1f s, while living workers take their lapsed leases back",
                (at - int(last)) / 1000, self.lease_ttl_ms / 1000,
            )
            calm = at
        else:
            calm = int(calm_since or 0)
        await self.redis.hset(key, mapping={"last": at, "calm_since": calm})
        return calm + self.lease_ttl_ms

    async def reap(self, at_ms: int | None = None, *, trust_leases_from: int = 0) -> list[str]:
        """One pass over the jobs due at `at_ms` (default now); returns the ids queued again.

        Every id looked at is forgotten or rescheduled after `at_ms`, so the pass ends.
        Before `trust_leases_from` (see `record_pass`), a running job without a lease is
        looked at again then instead of being queued.
        """
        at = now_ms() if at_ms is None else at_ms
        requeued: list[str] = []
        backlog: bool | None = None  # asked once per pass, and only when it matters
        while True:
            ids = await self.live.due(at, self.BATCH)
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.keys.job(job_id), "state", "updated_at")
                    pipe.pttl(self.keys.lease(job_id))
                replies = await pipe.execute()
            gone: list[str] = []
            later: dict[str, int] = {}
            again: list[str] = []
            for job_id, (state, updated_at), lease_ms in zip(ids, replies[::2], replies[1::2], strict=True):
                if state is None or state in TERMINAL_STATES:
                    gone.append(job_id)
                elif lease_ms != -2:  # held (-1, no expiry, would be a bug: look again next interval)
                    later[job_id] = at + (lease_ms if lease_ms > 0 else self.interval_ms)
                elif state == State.RUNNING and at < trust_leases_from:
                    later[job_id] = trust_leases_from  # its worker may be alive, taking its lease back
                elif state == State.RUNNING:
                    log.warning("job %s is running but its worker is gone; queueing it again", job_id)
                    self.metrics.stalled("worker_gone")
                    again.append(job_id)
                elif (stale_at := int(updated_at or 0) + self.pending_stale_ms) > at:
                    later[job_id] = stale_at
                else:
                    if backlog is None:
                        backlog = await self.queue_has_unread()
                    if backlog:
                        later[job_id] = at + self.pending_stale_ms
                    else:
                        log.warning("job %s is pending with no worker on it; queueing it again", job_id)
                        self.metrics.stalled("pending_stale")
                        again.append(job_id)
            # Rescheduled before queueing, so the runner that takes a job sets its next look last.
            later.update((job_id, at + self.pending_stale_ms) for job_id in again)
            await self.live.forget(*gone)
            await self.live.postpone(later)
            for job_id in again:
                await self.requeue(job_id)
            requeued += again
            if len(ids) < self.BATCH:
                return requeued

    async def reclaim_messages(self) -> int:
        """Queue again the messages unacknowledged for longer than JOBTRAIL_BROKER_IDLE_MS; how many."""
        reclaimed = await self.queue.reclaim_idle(self.name, self.message_idle_ms, self.BATCH)
        if reclaimed:
            log.info("reclaimed %d queue message(s) unacknowledged for %.0f s", reclaimed, self.message_idle_ms / 1000)
        return reclaimed

    async def trim_queue(self) -> int:
        """Remove the queue's messages every worker is done with; how many went (two round trips)."""
        return await self.queue.trim()

    async def queue_has_unread(self) -> bool:
        """Whether the queue holds a message the workers' group has not read yet (one round trip)."""
        return await self.queue.has_unread()

"""The derived writes that follow the appends of a worker's deliveries, for all of them at once.

An outcome is followed by its activity-feed entries (app/activity.py) and by the live
set's ZREM (app/livejobs.py); a retry and a long job's `started` by feed entries alone.
These keys are in other Redis Cluster slots than the job's, so they cannot ride in its
append, and each delivery sending them alone cost a round trip per job. Here every
delivery that has some in one turn of the event loop shares one pipeline: a busy worker
sends one round trip for several jobs, an idle one what it sent before. A write is
queued and sent within DELAY_S, so a delivery (and its message's ack) does not wait for
it; a stopping worker flushes what is left. Given the runner's shared pipeline
(app/batching.py), the trailer's commands ride in its next round trip, with the starts and
outcomes of other deliveries: a busy worker then pays no round trip of its own for them.

Best-effort, like every derived write: a failure is logged, the jobs' own streams stay
the truth, and the reaper forgets a finished job the live set still names.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from jobtrail.activity import FeedNote
from jobtrail.eventlog import EventLog, SharedRun
from jobtrail.livejobs import LiveJobs

log = logging.getLogger(__name__)


class Trailer:
    """Queues derived writes and sends every one queued within DELAY_S in one pipeline, in order."""

    DELAY_S = 0.002

    def __init__(self, events: EventLog, live: LiveJobs, shared: SharedRun | None = None) -> None:
        self.events = events
        self.live = live
        self.shared = shared
        self._notes: list[FeedNote] = []
        self._finished: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._order = asyncio.Lock()  # one pipeline at a time: a job's entries land in the order written

    def write(self, notes: list[FeedNote], finished: str | None = None) -> None:
        """Queue `notes` for the feed, and the `finished` job's ZREM from the live set."""
        self._notes += notes
        if finished is not None:
            self._finished.append(finished)
        if self._timer is None and (self._notes or self._finished):
            self._timer = asyncio.get_running_loop().call_later(self.DELAY_S, self._send_soon)

    def _send_soon(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def flush(self) -> None:
        """Send what is queued now, after what is being sent already (a stopping worker's last call)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        notes, finished = self._notes, self._finished
        self._notes, self._finished = [], []
        async with self._order:
            await self._send(notes, finished)

    async def _send(self, notes: list[FeedNote], finished: list[str]) -> None:
        """One pipeline (or a share of one): the feed's XADDs in order, then one ZREM of every finished job."""
        if not notes and not finished:
            return
        feed_writes = 0

        def queue(pipe: Pipeline) -> None:
            nonlocal feed_writes
            start = len(pipe)
            self.events.activity.queue_records(pipe, notes)  # one wake per feed for all of them
            feed_writes = len(pipe) - start
            self.live.queue_forget(pipe, *finished)

        try:
            if self.shared is not None:
                replies = await self.shared(queue)
            else:
                async with self.events.redis.pipeline(transaction=False) as pipe:
                    queue(pipe)
                    replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            log.warning("feed or live set not updated for %d job(s) (%s)", len({n.job_id for n in notes} | {*finished}),
                        exc)
            return
        failed = [reply for reply in replies[:feed_writes] if isinstance(reply, Exception)]
        if failed:
            self.events.feed_failed(notes[0], failed[0])
        if finished and isinstance(replies[-1], Exception):
            log.warning("live set not updated for %d finished job(s) (%s)", len(finished), replies[-1])

"""The taskiq broker and the one task it carries: `jobtrail.run_job(job_id)`.

With REDIS_URL the broker is JobBroker: the queue stream and consumer group that
workers/queue.py describes, on a client from app/store.py, so one class serves one server,
Sentinel and Cluster alike (every command names the one queue key). Embedded, taskiq's
InMemoryBroker runs the task in the API process itself.

Why not taskiq-redis's brokers: they are one copy per topology, and the Cluster one
(RedisStreamClusterBroker) reads unbounded batches, closes its client in its own group
declaration, and never reclaims a dead worker's messages (taskiq-redis#130). The queue's
layout is theirs still (one stream, field `data`, one group), so a queue written by an
earlier jobtrail is read as it was; the reclaim is the reaper's (workers/reaper.py), on
every topology and on an idle queue too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, InMemoryBroker
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.store import Store
from jobtrail.workers.queue import GROUP_START, RUN_JOB, group_name
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)

XREAD_BLOCK_MS = 2000


class JobBroker(AsyncBroker):
    """The workers' consumer group on the queue stream; waits out a Redis outage instead of spinning through it.

    taskiq restarts a failed listener at once, so while Redis is away a worker would
    retry (and log a traceback) hundreds of times a second: the read backs off instead.
    And when Redis comes back without its data (or a failover lost the group), the group
    is declared again, from "0".

    Round trips: a read takes as many messages as this worker has free slots
    (`concurrency`, taskiq's max_async_tasks, less the messages it runs), so a busy
    queue costs one read per several jobs, and what it reads starts at once. An ack is
    queued: the next read carries it (XACK pipelined ahead of XREADGROUP), or, when no
    read comes within ACK_DELAY_S (a read blocked on an empty queue, a worker stopping),
    one XACK takes every ack queued by then. So a message is acknowledged a few ms after
    its job's terminal event, never before; a worker killed in between leaves it pending,
    and its redelivery finds the job finished and drops itself. `flush_acks` sends what
    is queued now; a stopping worker calls it before it hands messages back.
    """

    ACK_DELAY_S = 0.005

    def __init__(
        self, redis: Any, *, queue_name: str, consumer_group_name: str, xread_block_ms: int, concurrency: int = 1
    ) -> None:
        super().__init__()
        self.redis = redis
        self.queue_name = queue_name
        self.consumer_group_name = consumer_group_name
        self.consumer_name = str(uuid.uuid4())
        self.xread_block_ms = xread_block_ms
        self.concurrency = max(concurrency, 1)
        self._running = 0  # messages handed to taskiq and not acknowledged yet
        self._acks: list[str] = []  # acknowledged by taskiq, XACK not sent yet
        self._ack_flush: asyncio.TimerHandle | None = None
        self._ack_tasks: set[asyncio.Task[None]] = set()

    async def startup(self) -> None:
        await super().startup()
        await self._declare_consumer_group()

    async def shutdown(self) -> None:
        await super().shutdown()
        with contextlib.suppress(RedisError):  # unsent, they stay pending: the reaper reclaims them
            await self.flush_acks()
        await self.redis.aclose()

    async def _declare_consumer_group(self) -> None:
        """XGROUP CREATE … MKSTREAM from GROUP_START; a group that exists already is left as it is."""
        try:
            await self.redis.xgroup_create(self.queue_name, self.consumer_group_name, id=GROUP_START, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def kick(self, message: BrokerMessage) -> None:
        """Queue one message (one XADD)."""
        await self.redis.xadd(self.queue_name, {"data": message.message})

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        delay = 0.1
        while True:
            acks = self._take_acks()
            try:
                fetched = await self._read(acks)
            except RedisError as exc:
                self._acks[:0] = acks
                log.warning("broker cannot read the queue (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(RedisError):  # still away: the next read says so
                    await self._declare_consumer_group()
                continue
            delay = 0.1
            for _stream, messages in fetched or ():
                for message_id, fields in messages:
                    data = (fields or {}).get("data")
                    self._running += 1
                    if data is None:  # not a taskiq message (deleted meanwhile, or written by hand)
                        await self._ack(message_id)()
                        continue
                    yield AckableMessage(data=data.encode(), ack=self._ack(message_id))

    async def _read(self, acks: list[str]) -> Any:
        """XREADGROUP for this worker's free slots, behind the XACK of `acks` (one round trip)."""
        count = max(self.concurrency - self._running, 1)
        streams = {self.queue_name: ">"}
        if not acks:
            return await self.redis.xreadgroup(
                self.consumer_group_name, self.consumer_name, streams, count=count, block=self.xread_block_ms
            )
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.queue_name, self.consumer_group_name, *acks)
            pipe.xreadgroup(self.consumer_group_name, self.consumer_name, streams, count=count,
                            block=self.xread_block_ms)
            _, fetched = await pipe.execute()
        return fetched

    def _ack(self, message_id: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            self._running -= 1
            self._acks.append(message_id)
            if self._ack_flush is None:
                self._ack_flush = asyncio.get_running_loop().call_later(self.ACK_DELAY_S, self._flush_later)

        return ack

    def _take_acks(self) -> list[str]:
        acks, self._acks = self._acks, []
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        return acks

    def _flush_later(self) -> None:
        self._ack_flush = None
        task = asyncio.create_task(self._flush_logged())
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    async def _flush_logged(self) -> None:
        try:
            await self.flush_acks()
        except RedisError as exc:
            log.warning("broker could not acknowledge messages (%s); trying again with the next ack", exc)

    async def flush_acks(self) -> None:
        """Send the acks queued now (one XACK); on a Redis error they stay queued, and it raises."""
        acks = self._take_acks()
        if not acks:
            return
        try:
            await self.redis.xack(self.queue_name, self.consumer_group_name, *acks)
        except RedisError:
            self._acks[:0] = acks
            raise


def build_broker(settings: Settings, keys: Keys) -> AsyncBroker:
    if settings.embedded:
        return InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    # Its own pool: every running job acknowledges through it, and its read blocks one connection.
    client = Store(settings, role="broker").pooled(
        max_connections=settings.worker_concurrency + 4, block_ms=XREAD_BLOCK_MS
    )
    return JobBroker(
        client, queue_name=keys.queue(), consumer_group_name=group_name(keys), xread_block_ms=XREAD_BLOCK_MS,
        concurrency=settings.worker_concurrency,
    )


def register_runner(broker: AsyncBroker, runner: Runner) -> None:
    """Make this process execute `run_job` deliveries with `runner`."""

    async def run_job(job_id: str) -> None:
        await runner.run(job_id)

    broker.register_task(run_job, task_name=RUN_JOB)


async def enqueue(broker: AsyncBroker, job_id: str) -> None:
    """Queue one run of a job (one XADD on the Redis broker); a Redis failure raises as itself."""
    try:
        await AsyncKicker[[str], None](RUN_JOB, broker, labels={}).kiq(job_id)
    except SendTaskError as exc:
        # taskiq wraps every broker error; unwrapped, Redis being away answers 503, not 500.
        if isinstance(exc.__cause__, RedisError):
            raise exc.__cause__ from None
        raise

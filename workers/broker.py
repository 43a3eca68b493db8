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

import msgspec
from redis.exceptions import RedisError, ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, InMemoryBroker, TaskiqMiddleware
from taskiq.exceptions import SendTaskError
from taskiq.formatters.proxy_formatter import ProxyFormatter
from taskiq.kicker import AsyncKicker
from taskiq.serializers.json_serializer import JSONSerializer

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.store import Store
from jobtrail.workers.queue import GROUP_START, RUN_JOB, group_name
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)

XREAD_BLOCK_MS = 2000
_encode = msgspec.json.Encoder().encode


class JobBroker(AsyncBroker):
    """The workers' consumer group on the queue stream; waits out a Redis outage instead of spinning through it.

    taskiq restarts a failed listener at once, so while Redis is away a worker would
    retry (and log a traceback) hundreds of times a second: the read backs off instead.
    And when Redis comes back without its data (or a failover lost the group), the group
    is declared again, from "0".
    """

    def __init__(
        self, redis: Any, *, queue_name: str, consumer_group_name: str, xread_block_ms: int, owns_client: bool = True
    ) -> None:
        super().__init__()
        self.redis = redis
        # False when `redis` is the process's shared pool (an API's), which its owner closes.
        self.owns_client = owns_client
        self.queue_name = queue_name
        self.consumer_group_name = consumer_group_name
        self.consumer_name = str(uuid.uuid4())
        self.xread_block_ms = xread_block_ms
        self._message_shape: dict[str, Any] | None = None

    async def startup(self) -> None:
        await super().startup()
        await self._declare_consumer_group()

    async def shutdown(self) -> None:
        await super().shutdown()
        if self.owns_client:
            await self.redis.aclose()

    async def _declare_consumer_group(self) -> None:
        """XGROUP CREATE … MKSTREAM from GROUP_START; a group that exists already is left as it is."""
        try:
            await self.redis.xgroup_create(self.queue_name, self.consumer_group_name, id=GROUP_START, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run_job_message(self, job_id: str) -> bytes:
        """The message `enqueue` sends for `job_id`, without building it through taskiq each time.

        taskiq's kicker makes it with pydantic and the json module, which cost an API more
        than the rest of a submission's writes. Its shape is taken once from the kicker
        (so it stays taskiq's, for workers to read), then only the task id and the job id
        change. With a formatter or serializer of someone else's, the kicker makes each.
        """
        if type(self.formatter) is not ProxyFormatter or type(self.serializer) is not JSONSerializer:
            return self._kicked_message(job_id)
        if self._message_shape is None:
            self._message_shape = msgspec.json.decode(self._kicked_message(job_id))
        return _encode({**self._message_shape, "task_id": uuid.uuid4().hex, "args": [job_id]})

    def _kicked_message(self, job_id: str) -> bytes:
        prepared = AsyncKicker[[str], None](RUN_JOB, self, labels={})._prepare_message(job_id)
        return self.formatter.dumps(prepared).message

    async def kick(self, message: BrokerMessage) -> None:
        """Queue one message (one XADD)."""
        await self.redis.xadd(self.queue_name, {"data": message.message})

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        delay = 0.1
        while True:
            try:
                # One message per read: a read claims what it returns for this worker, so a
                # larger batch would sit here, unstarted, while other workers have room.
                fetched = await self.redis.xreadgroup(
                    self.consumer_group_name, self.consumer_name, {self.queue_name: ">"},
                    count=1, block=self.xread_block_ms,
                )
            except RedisError as exc:
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
                    if data is None:  # not a taskiq message (deleted meanwhile, or written by hand)
                        await self._ack(message_id)()
                        continue
                    yield AckableMessage(data=data.encode(), ack=self._ack(message_id))

    def _ack(self, message_id: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            await self.redis.xack(self.queue_name, self.consumer_group_name, message_id)

        return ack


def build_broker(settings: Settings, keys: Keys, shared: Any = None) -> AsyncBroker:
    """The process's broker; on `shared` (the process's pooled client) when it only sends, never listens.

    A process that only queues (the API) needs no pool of its own for one XADD per job:
    sharing keeps its Redis connections at its pool size, however busy it is.
    """
    if settings.embedded:
        return InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    if shared is not None:
        return JobBroker(shared, queue_name=keys.queue(), consumer_group_name=group_name(keys),
                         xread_block_ms=XREAD_BLOCK_MS, owns_client=False)
    # Its own pool: every running job acknowledges through it, and its read blocks one connection.
    client = Store(settings, role="broker").pooled(
        max_connections=settings.worker_concurrency + 4, block_ms=XREAD_BLOCK_MS
    )
    return JobBroker(
        client, queue_name=keys.queue(), consumer_group_name=group_name(keys), xread_block_ms=XREAD_BLOCK_MS
    )


def register_runner(broker: AsyncBroker, runner: Runner) -> None:
    """Make this process execute `run_job` deliveries with `runner`."""

    async def run_job(job_id: str) -> None:
        await runner.run(job_id)

    broker.register_task(run_job, task_name=RUN_JOB)


def queue_enqueue(broker: AsyncBroker, pipe: Any, job_id: str) -> bool:
    """`enqueue`'s XADD, queued on a pipeline of the caller's; False (nothing queued) when it cannot be.

    The message is the one `enqueue` sends (taskiq's kicker builds it), so a worker reads
    both alike. Only the Redis broker, and only without a middleware that acts on sending:
    such a middleware (or the embedded broker) needs `enqueue` itself, after the round trip.
    """
    if not isinstance(broker, JobBroker) or any(
        type(m).pre_send is not TaskiqMiddleware.pre_send or type(m).post_send is not TaskiqMiddleware.post_send
        for m in broker.middlewares
    ):
        return False
    pipe.xadd(broker.queue_name, {"data": broker.run_job_message(job_id)})
    return True


async def enqueue(broker: AsyncBroker, job_id: str) -> None:
    """Queue one run of a job (one XADD on the Redis broker); a Redis failure raises as itself."""
    try:
        await AsyncKicker[[str], None](RUN_JOB, broker, labels={}).kiq(job_id)
    except SendTaskError as exc:
        # taskiq wraps every broker error; unwrapped, Redis being away answers 503, not 500.
        if isinstance(exc.__cause__, RedisError):
            raise exc.__cause__ from None
        raise

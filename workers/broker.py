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
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, InMemoryBroker, TaskiqMiddleware
from taskiq.exceptions import SendTaskError
from taskiq.formatters.proxy_formatter import ProxyFormatter
from taskiq.kicker import AsyncKicker
from taskiq.message import TaskiqMessage
from taskiq.serializers.json_serializer import JSONSerializer

from jobtrail.config import Settings
from jobtrail.eventlog import SharedRun
from jobtrail.keys import Keys
from jobtrail.store import Store
from jobtrail.workers.queue import GROUP_START, RUN_JOB, group_name
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)

XREAD_BLOCK_MS = 2000
_encode = msgspec.json.Encoder().encode


class JobFormatter(ProxyFormatter):
    """taskiq's own formatter, whose `loads` has pydantic parse the message's JSON itself.

    The same message, the same validation; taskiq's way (the json module, then pydantic
    over the dict) cost a worker ~15 µs a message against ~6. A serializer of someone
    else's is left to taskiq's way.
    """

    def loads(self, message: bytes) -> TaskiqMessage:
        if type(self.broker.serializer) is JSONSerializer:
            return TaskiqMessage.model_validate_json(message)
        return super().loads(message)


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
        self, redis: Any, *, queue_name: str, consumer_group_name: str, xread_block_ms: int, concurrency: int = 1,
        owns_client: bool = True,
    ) -> None:
        super().__init__()
        self.formatter = JobFormatter(self)
        self.redis = redis
        # False when `redis` is the process's shared pool (an API's), which its owner closes.
        self.owns_client = owns_client
        self.queue_name = queue_name
        self.consumer_group_name = consumer_group_name
        self.consumer_name = str(uuid.uuid4())
        self.xread_block_ms = xread_block_ms
        self.concurrency = max(concurrency, 1)
        self._running = 0  # messages handed to taskiq and not acknowledged yet
        self._acks: list[str] = []  # acknowledged by taskiq, XACK not sent yet
        self._ack_flush: asyncio.TimerHandle | None = None
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self._message_shape: dict[str, Any] | None = None
        # The runner's shared round trips (register_runner), which a busy worker's reads ride in.
        self.shared: SharedRun | None = None

    async def startup(self) -> None:
        await super().startup()
        await self._declare_consumer_group()

    async def shutdown(self) -> None:
        await super().shutdown()
        with contextlib.suppress(RedisError):  # unsent, they stay pending: the reaper reclaims them
            await self.flush_acks()
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
        if type(self.formatter) not in (ProxyFormatter, JobFormatter) or type(self.serializer) is not JSONSerializer:
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
        """XREADGROUP for this worker's free slots, behind the XACK of `acks` (one round trip).

        While jobs run and the runner's round trips are `shared`, a read without BLOCK goes
        first, in the runner's next round trip (its starts and outcomes): a busy worker's
        reads cost no round trip of their own. Only when that finds the queue empty does a
        blocking read follow.
        """
        count = max(self.concurrency - self._running, 1)
        streams = {self.queue_name: ">"}
        if self.shared is not None and self._running > 0:
            fetched = await self._read_shared(self.shared, acks, streams, count)
            if fetched:
                return fetched
            acks = []
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

    async def _read_shared(self, shared: SharedRun, acks: list[str], streams: dict[str, str], count: int) -> Any:
        """XACK of `acks` and an XREADGROUP that does not block, in a round trip shared with the runner's."""

        def queue(pipe: Pipeline) -> None:
            if acks:
                pipe.xack(self.queue_name, self.consumer_group_name, *acks)
            pipe.xreadgroup(self.consumer_group_name, self.consumer_name, streams, count=count)

        replies = await shared(queue)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[-1]

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
        client, queue_name=keys.queue(), consumer_group_name=group_name(keys), xread_block_ms=XREAD_BLOCK_MS,
        concurrency=settings.worker_concurrency,
    )


def register_runner(broker: AsyncBroker, runner: Runner) -> None:
    """Make this process execute `run_job` deliveries with `runner`."""

    async def run_job(job_id: str) -> None:
        await runner.run(job_id)

    broker.register_task(run_job, task_name=RUN_JOB)
    if isinstance(broker, JobBroker):
        broker.shared = runner.shared.run


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

"""The composition root: every service of a process, built once from `Settings`.

`jobtrail serve` (through the app, app/api/app.py), `jobtrail worker`, `jobtrail repair`,
`jobtrail migrate` and the tests all call `open_services` (or `build_services` with clients
of their own), so each setting reaches the constructor that uses it in exactly one place.
Constructors take what they use, with no defaults that stand in for a setting: a figure
that is not given here is a figure nobody configured. The rest of the code is handed
these objects (by the app's dependencies, or as arguments) and never looks them up by name.

Building does no I/O: Redis clients connect on first use, and what runs in the
background (the hub's read, the SSE slot renewer, the broker) is started by whoever
needs it, the API's lifespan only. `aclose` ends the clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from taskiq import AsyncBroker

from jobtrail.artifacts import ArtifactStore
from jobtrail.batching import SharedPipeline
from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.hub import Hub
from jobtrail.index import JobIndex
from jobtrail.index_sweep import IndexSweep
from jobtrail.keys import Keys
from jobtrail.limits import SseSlots, SubmitRate
from jobtrail.metrics import Metrics
from jobtrail.opening import FollowOpener
from jobtrail.replicawait import ReplicaWait
from jobtrail.service import JobService
from jobtrail.store import Store
from jobtrail.tokens import TokenSigner
from jobtrail.workers.broker import build_broker, enqueue, queue_enqueue


@dataclass(frozen=True, eq=False)
class Services:
    """What one process holds: its clients and the services built on them.

    The field names are the names the API's routes take them by (app/api/app.py).
    """

    settings: Settings
    redis: Redis
    keys: Keys
    events: EventLog
    index: JobIndex
    index_sweep: IndexSweep
    artifacts: ArtifactStore
    broker: AsyncBroker
    service: JobService
    signer: TokenSigner
    submit_rate: SubmitRate
    sse_slots: SseSlots
    hub: Hub
    metrics: Metrics
    # The round trip that concurrent reads of the hot routes share (app/batching.py).
    reads: SharedPipeline
    # An SSE follow's opening read (app/opening.py).
    opener: FollowOpener

    async def enqueue(self, job_id: str) -> None:
        """Queue one run of a job (one XADD on the Redis broker)."""
        await enqueue(self.broker, job_id)

    async def aclose(self) -> None:
        """Close the clients (the hub's reader too, which `Hub.stop` closes when it ran)."""
        await self.hub.reader.aclose()
        await self.redis.aclose()


def open_services(settings: Settings, role: str) -> Services:
    """The services of a process in `role` (api, worker, repair, migrate), on clients of its own Store."""
    store = Store(settings, role=role)
    worker = role == "worker"
    # A worker's running jobs each write on their own, so its pool holds one for each;
    # an API's requests hold a connection only for a round trip, and a few serve them all.
    pool = store.pooled(max(store.pool_size, settings.worker_concurrency) if worker else None)
    # Only a worker reads the queue (blocking reads, an ack per job): the others queue on their own pool.
    return build_services(settings, pool, store.dedicated(settings.hub_block_ms), broker_on_pool=not worker)


def build_services(settings: Settings, redis: Redis, hub_reader: Redis, *, broker_on_pool: bool = False) -> Services:
    """Every service, from `settings`, on `redis` (pooled) and `hub_reader` (the hub's pub/sub template).

    `broker_on_pool`: the broker sends on `redis` too, instead of a pool of its own.
    """
    keys = Keys(settings.prefix)
    metrics = Metrics(tenant_label=settings.metrics_tenant_label == "on")
    # Embedded there are no replicas to wait for (and fakeredis has no WAIT).
    replica_wait = None if settings.embedded else ReplicaWait(settings.wait_replicas, settings.wait_timeout_ms)
    events = EventLog(redis, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen, metrics=metrics,
                      replica_wait=replica_wait)
    index = JobIndex(redis, keys)
    artifacts = ArtifactStore(settings.artifact_dir)
    broker = build_broker(settings, keys, shared=redis if broker_on_pool else None)

    async def enqueue_job(job_id: str) -> None:
        await enqueue(broker, job_id)

    def queue_job(pipe: Pipeline, job_id: str) -> bool:
        return queue_enqueue(broker, pipe, job_id)

    signer = TokenSigner(redis, keys, settings.token_secret)
    return Services(
        settings=settings,
        redis=redis,
        keys=keys,
        events=events,
        index=index,
        index_sweep=IndexSweep(redis, keys, per_pass=settings.index_sweep_per_pass),
        artifacts=artifacts,
        broker=broker,
        service=JobService(events, index, enqueue_job, settings, artifacts, secret=signer.secret, queue=queue_job),
        signer=signer,
        submit_rate=SubmitRate(redis, keys, settings.submissions_per_minute),
        sse_slots=SseSlots(redis, keys, settings.sse_connections_per_tenant, settings.sse_slot_ttl_s),
        hub=Hub(hub_reader, redis, keys, block_ms=settings.hub_block_ms, queue_size=settings.sse_queue_size,
                catch_up_s=settings.hub_catch_up_s, timeout_s=settings.redis_timeout_s),
        metrics=metrics,
        reads=SharedPipeline(redis),
        opener=FollowOpener(events),
    )

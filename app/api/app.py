"""The Litestar application: wiring of Redis, the event log, the hub and the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from redis.exceptions import RedisError

from app.api.activity import activity_events
from app.api.audit import audit_report
from app.api.errors import EXCEPTION_HANDLERS
from app.api.health import healthz, readyz
from app.api.jobs import JobsController
from app.artifacts import ArtifactStore
from app.config import Settings
from app.eventlog import EventLog
from app.hub import Hub
from app.index import JobIndex
from app.keys import Keys
from app.service import JobService
from app.store import Store
from app.sweeper import run_sweeper
from workers.broker import build_broker, enqueue, register_runner
from workers.runner import Runner

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Litestar:
    """The API for `settings`; embedded (no REDIS_URL) it also runs jobs in-process."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        store = Store(settings, role="api")
        redis = store.pooled()
        keys = Keys(settings.prefix)
        events = EventLog(redis, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)
        broker = build_broker(settings, keys)
        if settings.embedded:
            register_runner(broker, Runner(events, settings, name="embedded"))
        try:
            await broker.startup()
        except RedisError as exc:
            # Workers declare the queue's consumer group too; the API only appends to it.
            log.warning("broker startup could not reach Redis (%s); continuing", exc)
        hub = Hub(store.dedicated(settings.hub_block_ms), redis, keys,
                  block_ms=settings.hub_block_ms, queue_size=settings.sse_queue_size)
        hub.start()

        async def enqueue_job(job_id: str) -> None:
            await enqueue(broker, job_id)

        index = JobIndex(redis, keys)
        artifacts = ArtifactStore(settings.artifact_dir)
        sweeper = asyncio.create_task(run_sweeper(artifacts, redis, keys, settings.artifact_sweep_s))
        app.state.update(
            redis=redis,
            events=events,
            hub=hub,
            index=index,
            artifacts=artifacts,
            service=JobService(events, index, enqueue_job, settings, artifacts),
        )
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await hub.stop()
            await broker.shutdown()
            await redis.aclose()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> object:
            return state[name]

        return Provide(provide, sync_to_thread=False)

    return Litestar(
        route_handlers=[JobsController, audit_report, activity_events, healthz, readyz],
        lifespan=[lifespan],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            **{name: from_state(name) for name in ("redis", "events", "hub", "index", "service", "artifacts")},
        },
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="jobtrail",
            version="0.1.0",
            description="Observable long-running jobs: status, history and resumable server-sent events.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
    )

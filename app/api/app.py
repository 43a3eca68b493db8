"""The Litestar application: wiring of Redis, the event log, the hub and the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from redis.exceptions import RedisError

from jobtrail.api.access import SCHEMA_PATH, access_guard
from jobtrail.api.activity import activity_events, feed_token
from jobtrail.api.audit import audit_report
from jobtrail.api.body import JsonRequest
from jobtrail.api.bounds import RequestBounds
from jobtrail.api.errors import EXCEPTION_HANDLERS
from jobtrail.api.health import healthz, readyz
from jobtrail.api.jobs import JobsController
from jobtrail.api.kinds import list_kinds
from jobtrail.api.legacy import LegacyExportsController
from jobtrail.api.requests import RequestIdMiddleware
from jobtrail.artifacts import ArtifactStore
from jobtrail.auth import ApiKeys, Principal, auth_enabled
from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.hub import Hub
from jobtrail.index import JobIndex
from jobtrail.index_sweep import IndexSweep
from jobtrail.keys import Keys
from jobtrail.limits import SseSlots, SubmitRate
from jobtrail.service import JobService
from jobtrail.store import Store
from jobtrail.sweeper import run_sweeper
from jobtrail.tokens import TokenSigner
from jobtrail.workers.broker import build_broker, enqueue, register_runner
from jobtrail.workers.kinds_loader import load_kinds
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Litestar:
    """The API for `settings`; embedded (no REDIS_URL) it also runs jobs in-process.

    Raises app.auth.ConfigError when access control is configured wrongly or missing, and
    KindsLoadError when a module of kinds fails to import.
    """
    load_kinds(settings)  # the same kinds as the workers: the API validates submissions against them
    api_keys = ApiKeys.from_settings(settings)
    secured = auth_enabled(settings, api_keys)

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

        sse_slots = SseSlots(redis, keys, settings.sse_connections_per_tenant, settings.sse_slot_ttl_s)
        sse_slots.start()
        index = JobIndex(redis, keys)
        artifacts = ArtifactStore(settings.artifact_dir)
        index_sweep = IndexSweep(redis, keys, per_pass=settings.index_sweep_per_pass)
        sweeper = asyncio.create_task(run_sweeper(artifacts, index_sweep, redis, keys, settings.artifact_sweep_s))
        app.state.update(
            redis=redis,
            events=events,
            hub=hub,
            index=index,
            artifacts=artifacts,
            service=JobService(events, index, enqueue_job, settings, artifacts),
            signer=TokenSigner(redis, keys, settings.token_secret),
            submit_rate=SubmitRate(redis, keys, settings.submissions_per_minute),
            sse_slots=sse_slots,
        )
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await hub.stop()
            await sse_slots.stop()
            await broker.shutdown()
            await redis.aclose()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> object:
            return state[name]

        return Provide(provide, sync_to_thread=False)

    def principal(request: Request) -> Principal:
        return request.user

    state_names = ("redis", "events", "hub", "index", "service", "artifacts", "signer", "submit_rate", "sse_slots")
    return Litestar(
        route_handlers=[
            JobsController, list_kinds, audit_report, activity_events, feed_token, healthz, readyz,
            *([LegacyExportsController] if settings.legacy_routes == "on" else []),
        ],
        lifespan=[lifespan],
        guards=[access_guard(api_keys, secured)],
        # Outermost first: the request id and access log see the bounds' refusals too.
        middleware=[RequestIdMiddleware, DefineMiddleware(RequestBounds, deadline_s=settings.redis_timeout_s)],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "principal": Provide(principal, sync_to_thread=False),
            **{name: from_state(name) for name in state_names},
        },
        exception_handlers=EXCEPTION_HANDLERS,
        # Logging is the process's business (app/cli.py), request ids included.
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        request_class=JsonRequest,
        openapi_config=OpenAPIConfig(
            title="jobtrail",
            version="0.1.0",
            description="Observable long-running jobs: status, history and resumable server-sent events.",
            path=SCHEMA_PATH,
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="`Authorization: Bearer <key>`"),
                "token": SecurityScheme(
                    type="apiKey", name="token", security_scheme_in="query",
                    description="A read-only token from `POST /jobs/{job_id}/tokens` or `POST /events/tokens`, "
                    "accepted on a job's events, history and artifact and on `/events` only",
                ),
            }),
            security=[{"apiKey": []}, {"token": []}] if secured else None,
        ),
    )

"""The Litestar application: routes, guard, middleware and OpenAPI over the services of app/services.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from redis.exceptions import RedisError

from jobtrail.api.access import SCHEMA_PATH, SocketAccess, access_guard
from jobtrail.api.activity import activity_events, feed_token
from jobtrail.api.audit import audit_report
from jobtrail.api.body import JsonRequest
from jobtrail.api.errors import EXCEPTION_HANDLERS
from jobtrail.api.health import healthz, readyz
from jobtrail.api.jobs import JobsController
from jobtrail.api.kinds import list_kinds
from jobtrail.api.legacy import LegacyExportsController
from jobtrail.api.metrics import metrics_text
from jobtrail.api.requests import RequestMiddleware
from jobtrail.api.swagger import swagger_asset, swagger_plugin
from jobtrail.api.ui import ui_router
from jobtrail.api.ws import ws, ws_described
from jobtrail.auth import ApiKeys, Principal, auth_enabled
from jobtrail.config import Settings
from jobtrail.livejobs import LiveJobs
from jobtrail.metrics_listener import MetricsListener, parse_bind
from jobtrail.services import Services, open_services
from jobtrail.sweeper import run_sweeper
from jobtrail.workers.broker import register_runner
from jobtrail.workers.kinds_loader import load_kinds
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)


def create_app(settings: Settings, services: Services | None = None) -> Litestar:
    """The API for `settings`; embedded (no REDIS_URL) it also runs jobs in-process.

    `services` are the process's (app/services.py); without them the app opens its own.
    Either way the app owns them from here: its lifespan starts what runs in the
    background and closes the clients at the end. Raises app.auth.ConfigError when access
    control is configured wrongly or missing, and KindsLoadError when a module of kinds
    fails to import.
    """
    load_kinds(settings)  # the same kinds as the workers: the API validates submissions against them
    api_keys = ApiKeys.from_settings(settings)
    secured = auth_enabled(settings, api_keys)
    if services is None:
        services = open_services(settings, role="api")
    if settings.embedded:
        register_runner(services.broker, Runner(services.events, settings, name="embedded"))
    metrics = services.metrics
    metrics.watch_hub(lambda: services.hub.subscriber_count)
    live = LiveJobs(services.redis, services.keys, settings.pending_stale_s)
    by_tenant = settings.metrics_tenant_label == "on"
    # Within half the request deadline, like /readyz: a Redis that hangs costs the page its
    # `jobtrail_jobs`, not the whole page.
    metrics.watch_live(lambda: live.counts(by_tenant=by_tenant), timeout_s=settings.redis_timeout_s / 2)
    listener = MetricsListener(metrics, *parse_bind(settings.metrics_bind)) if settings.metrics_bind else None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if listener is not None:
            listener.start()  # first: an address taken or not ours stops the start, before anything runs
        try:
            await services.broker.startup()
        except RedisError as exc:
            # Workers declare the queue's consumer group too; the API only appends to it.
            log.warning("broker startup could not reach Redis (%s); continuing", exc)
        services.hub.start()
        services.sse_slots.start()
        sweeper = asyncio.create_task(run_sweeper(
            services.artifacts, services.index_sweep, services.redis, services.keys, settings.artifact_sweep_s
        ))
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await services.hub.stop()
            await services.sse_slots.stop()
            await services.broker.shutdown()
            await services.aclose()
            if listener is not None:
                listener.stop()

    def provided(name: str) -> Provide:
        value = getattr(services, name)
        return Provide(lambda: value, sync_to_thread=False, use_cache=True)

    socket_access = SocketAccess(api_keys, secured, services.signer)

    def principal(request: Request) -> Principal:
        return request.user

    provided_names = (
        "redis", "events", "hub", "index", "service", "artifacts", "signer", "submit_rate", "sse_slots", "metrics"
    )
    return Litestar(
        route_handlers=[
            JobsController, list_kinds, audit_report, activity_events, feed_token, healthz, readyz, ws, ws_described,
            ui_router(), metrics_text, swagger_asset,
            *([LegacyExportsController] if settings.legacy_routes == "on" else []),
        ],
        lifespan=[lifespan],
        guards=[access_guard(api_keys, secured, services.signer)],
        # The request id, the access log and the bounds (deadline, query parameters), in one layer.
        middleware=[DefineMiddleware(RequestMiddleware, deadline_s=settings.redis_timeout_s)],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "principal": Provide(principal, sync_to_thread=False),
            "socket_access": Provide(lambda: socket_access, sync_to_thread=False, use_cache=True),
            **{name: provided(name) for name in provided_names},
            # All of them as one, for the hot routes: litestar resolves several dependencies
            # of one handler in a task group of their own, per request.
            "services": Provide(lambda: services, sync_to_thread=False, use_cache=True),
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
            render_plugins=[swagger_plugin()],
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

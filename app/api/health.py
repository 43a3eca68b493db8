"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import RedisError

from jobtrail.api.access import PUBLIC
from jobtrail.api.errors import RETRY_AFTER_S
from jobtrail.api.schemas import Health
from jobtrail.config import Settings


@get("/healthz", summary="The process is alive", tags=["health"], opt=PUBLIC)
async def healthz() -> Health:
    return Health(status="alive")


@get(
    "/readyz",
    summary="Redis answers (503 otherwise)",
    tags=["health"],
    opt=PUBLIC,
    responses={503: ResponseSpec(data_container=Health, description="Redis is not answering")},
)
# Any: Litestar checks an injected value against its annotation, a Cluster's client is no
# Redis, and msgspec takes no union of the two classes.
async def readyz(redis: NamedDependency[Any], settings: NamedDependency[Settings]) -> Response[Health]:
    try:
        # Within half the request deadline (app/api/bounds.py): a Redis that hangs gets
        # this probe's own answer, not the deadline's.
        async with asyncio.timeout(settings.redis_timeout_s / 2):
            await redis.ping()
    except (RedisError, TimeoutError):
        return Response(
            Health(status="redis unavailable"), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )
    return Response(Health(status="ready"))

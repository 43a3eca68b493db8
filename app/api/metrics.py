"""`/metrics`: the process's Prometheus text, for admin keys; or openly on a listener of its own.

Metrics span every tenant (job counts, kinds, error types), so on the API's own port
they take an admin key whenever keys are configured (open mode is open, like every
route). JOBTRAIL_METRICS_BIND=host:port serves them without a key on a second listener
(app/metrics_listener.py) that only a scraper should reach (a private interface, a
sidecar's port); the main port's `/metrics` still asks for an admin key then.
"""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from jobtrail.api.common import error_responses
from jobtrail.auth import Principal
from jobtrail.errors import Forbidden
from jobtrail.metrics import Metrics

# The text format every Prometheus reads (litestar adds `; charset=utf-8`). Our names
# need nothing newer: they are all legacy-valid, so the body is the same in 1.0.0.
MEDIA_TYPE = "text/plain; version=0.0.4"


@get(
    "/metrics",
    summary="Prometheus metrics of this process (an admin key when keys are configured)",
    tags=["metrics"],
    media_type=MEDIA_TYPE,
    responses={
        200: ResponseSpec(data_container=str, media_type=MEDIA_TYPE, description="Prometheus text format"),
        **error_responses(403),
    },
)
async def metrics_text(principal: NamedDependency[Principal], metrics: NamedDependency[Metrics]) -> Response[bytes]:
    if not principal.admin:
        raise Forbidden("/metrics needs an admin key (or JOBTRAIL_METRICS_BIND, a listener of its own)")
    return Response(await metrics.render(), media_type=MEDIA_TYPE)

"""Every error type mapped to an HTTP answer, once."""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from app.api.schemas import ErrorBody
from app.errors import (
    ArtifactNotFound,
    IdempotencyConflict,
    InvalidParams,
    InvalidRequest,
    JobExists,
    JobNotFinished,
    JobNotFound,
    NotAuthenticated,
    RateLimited,
    StoreUnavailable,
    TransitionRefused,
)
from app.patience import REDIS_AWAY

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2

_STATUS: dict[type[Exception], tuple[int, str]] = {
    JobNotFound: (404, "job_not_found"),
    ArtifactNotFound: (404, "artifact_not_found"),
    TransitionRefused: (409, "transition_refused"),
    JobExists: (409, "job_exists"),
    JobNotFinished: (409, "job_not_finished"),
    IdempotencyConflict: (409, "idempotency_conflict"),
    InvalidRequest: (400, "invalid_request"),
    InvalidParams: (422, "invalid_params"),
    NotAuthenticated: (401, "not_authenticated"),
    RateLimited: (429, "rate_limited"),
}

# Errors that mean "Redis is away for now", not "this request is wrong".
UNAVAILABLE = (*REDIS_AWAY, StoreUnavailable)


def _error(status: int, code: str, detail: str, extra: object = None, headers: dict[str, str] | None = None) -> Response:
    return Response(
        ErrorBody(error=code, detail=detail, extra=extra),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def on_jobtrail_error(_: Request, exc: Exception) -> Response:
    status, code = _STATUS[type(exc)]
    headers = None
    if isinstance(exc, NotAuthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return _error(status, code, str(exc), headers=headers)


def on_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    return _error(
        503,
        "store_unavailable",
        "the event store (Redis) is not answering; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def on_http_error(request: Request, exc: HTTPException) -> Response:
    code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
        exc.status_code, "http_error"
    )
    extra = getattr(exc, "extra", None)
    if isinstance(extra, list):
        extra = [_public_names(request, item) for item in extra]
    return _error(exc.status_code, code, exc.detail, extra, exc.headers)


def _public_names(request: Request, item: object) -> object:
    """A validation error names the handler's argument; the caller knows the query or header name."""
    if not isinstance(item, dict) or item.get("source") not in ("query", "header"):
        return item
    try:
        param = request.route_handler.parsed_fn_signature.parameters.get(item["key"])
    except AttributeError:  # no handler matched: nothing to translate
        return item
    public = getattr(getattr(param, "kwarg_definition", None), "name", None)
    return {**item, "key": public} if public else item


def on_unexpected(request: Request, exc: Exception) -> Response:
    job_id = request.path_params.get("job_id", "-")
    log.error("unhandled error in %s %s (job %s)", request.method, request.url.path, job_id, exc_info=exc)
    return _error(500, "internal_error", "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS = {
    **{exc_type: on_jobtrail_error for exc_type in _STATUS},
    **{exc_type: on_unavailable for exc_type in UNAVAILABLE},
    HTTPException: on_http_error,
    Exception: on_unexpected,
}

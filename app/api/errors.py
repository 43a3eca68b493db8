"""Every error turned into an HTTP answer, in one place.

A `JobtrailError` carries its own status and code (app/errors.py), so one handler answers
every subclass, one defined after this module included. The other codes are named here
(`_HTTP_CODES` for Litestar's own errors, `HTTP_FALLBACK`, `INTERNAL_CODE`), and
`error_codes()` collects them with those of every `JobtrailError` subclass:
tests/test_readme.py holds the README's error table equal to it, so a new code is
documented or the suite fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap, Receive, Scope, Send

from jobtrail.api.common import SSE_HEADERS
from jobtrail.api.redaction import redacted_target, redacted_text
from jobtrail.api.schemas import ErrorBody
from jobtrail.errors import InvalidRequest, JobtrailError, StoreUnavailable
from jobtrail.patience import REDIS_AWAY
from jobtrail.sse import sse_goodbye

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2

# Litestar's own HTTP errors (routing, parameter validation, body size), by status.
_HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    500: "internal_error",
}
HTTP_FALLBACK = "http_error"  # a Litestar HTTP error of any other status (none is expected)
UNAVAILABLE_CODE = (StoreUnavailable.status, StoreUnavailable.code)
INTERNAL_CODE = (JobtrailError.status, JobtrailError.code)

# Errors that mean "Redis is away for now", not "this request is wrong".
UNAVAILABLE = (*REDIS_AWAY, StoreUnavailable)


def _error(
    status: int, code: str, detail: str, extra: object = None, headers: dict[str, str] | None = None
) -> Response:
    # An error may name what the request sent (an id, a parameter): never a credential.
    if isinstance(extra, list):
        extra = [
            {**item, "message": redacted_text(str(item["message"]))}
            if isinstance(item, dict) and "message" in item else item
            for item in extra
        ]
    return Response(
        ErrorBody(error=code, detail=redacted_text(detail), extra=extra),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def unparsable_request_body(head_limit: int) -> bytes:
    """The error body of a request the HTTP protocol could not parse (app/api/protocol.py)."""
    detail = (f"the request is not valid HTTP/1.1, or its request line and headers take more than {head_limit} "
              "bytes (a URL that long, with that many query parameters, is not one jobtrail answers)")
    return msgspec.json.encode(ErrorBody(error=InvalidRequest.code, detail=detail))


def reconnect_later(request: Request, reason: str, retry_s: int) -> Response | None:
    """For a reconnect to an event stream (a `Last-Event-ID` header), a 200 stream that only says when to retry.

    A browser's EventSource treats any answer but 200 text/event-stream as fatal and never
    reconnects again (WHATWG HTML, server-sent events), so a tenant at its stream limit or
    Redis away for a moment would stop it for good. This answer carries `retry:` and a
    comment saying why, then ends; the browser comes back after `retry_s` with the same
    Last-Event-ID and loses nothing. A first connect (no header) still gets the status,
    which a client that is not a browser can act on. None when the request is not such a
    reconnect.
    """
    handler = request.scope.get("route_handler")
    if handler is None or not handler.opt.get("sse") or not request.headers.get("last-event-id"):
        return None
    return Response(
        sse_goodbye(reason, retry_s * 1000), status_code=200, media_type="text/event-stream", headers=SSE_HEADERS
    )


def on_jobtrail_error(request: Request, exc: Exception) -> Response:
    """Every `JobtrailError`: the status, code and headers its type declares."""
    assert isinstance(exc, JobtrailError)
    if exc.status >= 500:
        return on_unexpected(request, exc)  # a type that declares no answer is a bug, logged as one
    reconnect = exc.sse_reconnect()
    if reconnect is not None:
        later = reconnect_later(request, *reconnect)
        if later is not None:
            return later
    return _error(exc.status, exc.code, str(exc), headers=exc.headers())


def on_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable during %s %s: %s", request.method, redacted_text(request.url.path), exc)
    later = reconnect_later(request, "event store unavailable", RETRY_AFTER_S)
    if later is not None:
        return later
    return _error(
        *UNAVAILABLE_CODE,
        "the event store (Redis) is not answering; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def on_http_error(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, HTTP_FALLBACK)
    extra = getattr(exc, "extra", None)
    if isinstance(extra, list):
        extra = [_public_names(request, item) for item in extra]
    return _error(exc.status_code, code, _without_query(request, exc.detail), extra, exc.headers)


def _without_query(request: Request, detail: str) -> str:
    """Litestar's "Validation failed for GET /jobs?…" echoes the query string whole; a token with it."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    path = request.scope.get("path", "")
    if not query:
        return detail
    return detail.replace(f"{path}?{query}", redacted_target(path, query))


def _public_names(request: Request, item: object) -> object:
    """A validation error names the handler's argument; the caller knows the query or header name."""
    if isinstance(item, dict) and item.get("key") == "data" and item.get("message") == "'data'":
        # Litestar's word (a KeyError's) for a required body that was not sent.
        return {**item, "message": "a JSON body is required"}
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
    log.error("unhandled error in %s %s (job %s)", request.method, redacted_text(request.url.path),
              redacted_text(str(job_id)), exc_info=exc)
    return _error(*INTERNAL_CODE, "an unexpected error occurred; it has been logged")


def error_codes() -> set[tuple[int | None, str]]:
    """Every (status, code) an error answer can carry; status None for HTTP_FALLBACK, which takes any status."""
    return {*_jobtrail_codes(JobtrailError), *_HTTP_CODES.items(), UNAVAILABLE_CODE, INTERNAL_CODE,
            (None, HTTP_FALLBACK)}


def _jobtrail_codes(cls: type[JobtrailError]) -> set[tuple[int, str]]:
    """The (status, code) of `cls` and of every subclass of it, however deep."""
    codes = {(cls.status, cls.code)}
    for sub in cls.__subclasses__():
        codes |= _jobtrail_codes(sub)
    return codes


def handler_for(exc: Exception) -> Callable[[Request, Exception], Response]:
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_HANDLERS:
            return EXCEPTION_HANDLERS[cls]
    return on_unexpected


async def send_error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `exc` from ASGI middleware, as the app's handlers above would.

    Litestar's exception handling wraps a route's handler and the app as a whole, so an
    error raised in middleware skips the send wrappers of the middleware outside it (the
    request id, the access log); middleware answers its own errors with this instead.
    """
    request: Request = Request(scope, receive)
    await handler_for(exc)(request, exc).to_asgi_response(None, request)(scope, receive, send)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    JobtrailError: on_jobtrail_error,
    # More specific than JobtrailError for StoreUnavailable: both are found through the MRO.
    **{exc_type: on_unavailable for exc_type in UNAVAILABLE},
    HTTPException: on_http_error,
    Exception: on_unexpected,
}

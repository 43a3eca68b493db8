"""Request ids and the access log.

Every request gets an id: the caller's `X-Request-ID` when it is a sane one, else a
fresh one. It is sent back in the response, and every log line written while the
request runs carries it (see `RequestIdFilter`). The access log is ours rather than
uvicorn's because uvicorn's prints query strings whole, and `?token=` is a credential:
ours prints the target through app/api/redaction.py.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from jobtrail.api.bounds import run_bounded
from jobtrail.api.redaction import redacted_target, redacted_text

log = logging.getLogger("jobtrail.access")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


class RequestIdFilter(logging.Filter):
    """Gives every record a `request_id` attribute for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class RedactingFilter(logging.Filter):
    """Redacts the string arguments of every record: uvicorn logs a WebSocket's target with its query.

    `"WebSocket /ws?token=…" [accepted]` is written by uvicorn itself, not by our access log;
    a target's query is redacted by parameter name, any other text by shape.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # The access log's line is redacted where it is written (one per request: not twice).
        if isinstance(record.args, tuple) and record.name != log.name:
            record.args = tuple(_redacted_arg(arg) for arg in record.args)
        return True


class SecondFormatter(logging.Formatter):
    """logging's Formatter, its time formatted once a second rather than once a record.

    The access log writes a line per request, and `time.strftime` of the same second
    was a visible share of a small request's CPU. The line is unchanged: the second as
    the default format writes it, then the milliseconds (and a `datefmt` is as before).
    """

    _second: int | None = None
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        msec_format = self.default_msec_format
        return msec_format % (self._stamp, record.msecs) if msec_format else self._stamp


def _redacted_arg(arg: object) -> object:
    if not isinstance(arg, str):
        return arg
    path, mark, query = arg.partition("?")
    return redacted_target(path, query) if mark else redacted_text(arg)


class RequestMiddleware:
    """The app's one middleware: the request id and the access log line, around the bounds (app/api/bounds.py).

    One layer for both, since each layer costs a call per request and a send wrapper per
    message; the request id and the access log see the bounds' refusals too.
    """

    def __init__(self, app: ASGIApp, deadline_s: float) -> None:
        self.app = app
        self.deadline_s = deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 0

        def on_start(message: HTTPResponseStartEvent) -> None:
            nonlocal status
            status = message["status"]
            message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]

        try:
            await run_bounded(self.app, self.deadline_s, scope, receive, send, on_start)
        finally:
            target = redacted_target(scope["path"], scope.get("query_string", b"").decode("latin-1"))
            log.info("%s %s %d %.1fms", scope["method"], target, status, (time.perf_counter() - started) * 1000)
            REQUEST_ID.reset(token)


def _request_id(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is a sane one, else a fresh one."""
    raw = b""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            raw = value  # the last one, as a dict of the headers would keep
    given = raw.decode("latin-1")
    # A key pasted as a request id would be printed on every log line of the request.
    return given if given and _SANE_ID.match(given) and redacted_text(given) == given else os.urandom(16).hex()

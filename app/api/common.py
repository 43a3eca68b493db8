"""Pieces every route module shares: job access, SSE offsets and headers, error specs."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send
from prometheus_client import Gauge

from jobtrail.api.schemas import ErrorBody, TokenRequest
from jobtrail.auth import Principal
from jobtrail.config import Settings
from jobtrail.errors import InvalidRequest, JobNotFound, NotAuthenticated
from jobtrail.eventlog import EventLog, SharedRun
from jobtrail.jobstate import JobState
from jobtrail.keys import JOB_ID_RE
from jobtrail.limits import SseSlots, SubmitRate
from jobtrail.offsets import BEGINNING, parse_offset
from jobtrail.service import JobService
from jobtrail.tokens import TokenSigner

# No length or pattern here: any id that no job can have is a 404 (checked_job_id), as for
# a job that does not exist, rather than a 400 that tells ids apart.
JobId = Annotated[str, Parameter(description="Job id: letters, digits and `_.-`, at most 128")]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# `opt` of the event-stream routes: a reconnect there that meets a 429 or a 503 is
# answered as a short event stream instead (app/api/errors.py, reconnect_later).
SSE_ROUTE = {"sse": True}

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body says what to fix",
    401: "No valid API key (`Authorization: Bearer <key>`), or a token that is expired, forged or for "
    "something else",
    403: "The key is valid but may not do this (`/metrics` takes an admin key; a tenant key may list only its "
    "own tenant)",
    404: "No such job (or it has expired, or it belongs to another tenant)",
    409: "The job's state does not allow this",
    413: "Request body too large",
    415: "The body is not `application/json`",
    422: "Unknown job kind or params the kind rejects",
    426: "A WebSocket endpoint asked for without `Upgrade: websocket`",
    429: "Over a per-tenant limit; retry after `Retry-After` seconds",
    503: "Redis is not answering; retry after `Retry-After` seconds",
}


_encode = msgspec.json.Encoder().encode


class JsonAnswer(Response[Any]):
    """A JSON response already encoded, that the hot routes hand to Litestar ready to send.

    To any code that takes a `Response` it is one (the same body, status and headers as
    `Response(body, media_type=JSON, headers=...)`); a route declared with `GuardedInPlace`
    (app/api/access.py) sends it through `answer()` instead of `to_asgi_response`, which
    merges the route's headers and cookies, looks a serializer up and builds the ASGI
    response header by header (~8 % of a `GET /jobs/{id}`'s CPU in py-spy).
    """

    __slots__ = ("_raw_headers", "_status")

    def __init__(self, body: bytes, *, status_code: int, headers: dict[str, str]) -> None:
        # Response.__init__'s state without its work (typing.Mapping instance checks, its
        # header copy): `headers` is ours, built by json_response for this one response.
        self.content = body
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.headers = headers
        self.media_type = MediaType.JSON
        self.status_code = self._status = status_code  # the second for its type: `int`, not `int | None`
        self.response_type_encoders = {}
        # What MutableScopeHeaders.add would make of them: names lowercased, both latin-1.
        self._raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    def answer(self) -> ASGIResponse:
        """The ASGI response `to_asgi_response` would make of it on a route with no headers, cookies,
        background or after_request hook of its own: the same start and body messages."""
        return _Answer(self.content, self._status, self._raw_headers)


class _Answer(ASGIResponse):
    """ASGIResponse's state set directly: its `__init__` adds each header through a method call."""

    __slots__ = ()

    def __init__(self, body: bytes, status_code: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = MutableScopeHeaders()
        self.headers.headers = raw_headers
        self.background = None
        self.body = body
        self.content_length = len(body)
        self._encoded_cookies = ()
        self.encoding = "utf-8"
        self.is_head_response = False
        self.status_code = status_code


def json_response(value: msgspec.Struct, *, status_code: int = 200, headers: dict[str, str]) -> Response[Any]:
    """`value` as a JSON response, encoded here once by msgspec: litestar's own rendering looks
    its serializer up for every response, and the hot routes answer thousands a second.

    The handler's annotation stays the documented type (OpenAPI reads it); the body is the same
    JSON litestar would write, from the same msgspec encoder.
    """
    body = _encode(value)
    # The two headers ASGIResponse would add, given here: it adds each by MutableMapping's
    # setdefault, a KeyError raised and caught when absent (~5 % of a GET's CPU in py-spy);
    # present, each is found. The same values, in the same place after the route's own.
    headers = {**headers, "content-type": MediaType.JSON.value, "content-length": str(len(body))}
    return JsonAnswer(body, status_code=status_code, headers=headers)


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the given error statuses (and 400 and 401, which any route may answer)."""
    # 400: a parameter that fails validation; without an entry of ours for it, litestar
    # documents its own error shape there, not ErrorBody.
    codes = tuple(sorted({400, 401, *codes}))
    return {c: ResponseSpec(data_container=ErrorBody, description=_ERROR_DESCRIPTIONS[c]) for c in codes}


def checked_job_id(job_id: str) -> str:
    """The id, or JobNotFound: an id no job can have never reaches a Redis key name."""
    if not JOB_ID_RE.match(job_id):
        raise JobNotFound(job_id)
    return job_id


def asked_job_id(principal: Principal, job_id: str) -> str:
    """The id a request may look up for `principal`: JobNotFound for no job's id, a 401 for another job's token.

    A token bound to another job is a 401, not a 404: its bearer already knows which
    job it was given, so nothing leaks, and the answer says the token is the problem.
    """
    job_id = checked_job_id(job_id)
    if principal.by_token and principal.job != job_id:
        raise NotAuthenticated("this token is for another job")
    return job_id


async def visible_job(
    events: EventLog, principal: Principal, job_id: str, shared: SharedRun | None = None
) -> JobState:
    """The job, if `principal` may see it; otherwise JobNotFound, exactly as if it did not exist (`asked_job_id`)."""
    job_id = asked_job_id(principal, job_id)
    # The owner is checked inside Redis, before anything is decoded: another tenant's job
    # and a missing one take the same work and the same time (EventLog.visible_state).
    return await events.visible_state(job_id, principal.tenant, sees_all=principal.admin, shared=shared)


Hold = Callable[[], AbstractAsyncContextManager[None]]


class _Holding:
    """An ASGI response run inside `hold`, its body closed as soon as it ends."""

    def __init__(self, response: ASGIResponse, hold: Hold, body: Any) -> None:
        self.response = response
        self.hold = hold
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.hold():
            try:
                await self.response(scope, receive, send)
            finally:
                # A client that leaves stops the response while the body is parked at a
                # `yield`; closed now, its own cleanup (the hub subscription) runs now too,
                # not whenever the generator happens to be collected.
                aclose = getattr(self.body, "aclose", None)
                if aclose is not None:
                    await aclose()


class HeldStream(Stream):
    """A Stream that holds something (an SSE slot) for exactly as long as its response is being sent.

    Not the body's own `finally`: that runs only when the generator is collected if the
    client left while it was parked at a `yield`, and a slot would be renewed until then.
    """

    def __init__(self, content: AsyncIterator[bytes], *, hold: Hold, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._hold = hold

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        # litestar only calls the result, as any ASGI app.
        return cast(ASGIResponse, _Holding(super().to_asgi_response(*args, **kwargs), self._hold, self.iterator))


async def sse_response(
    slots: SseSlots, principal: Principal, stream: AsyncIterator[bytes], counted: Gauge
) -> Stream:
    """`stream` as a text/event-stream response holding one of the principal's SSE slots (429 if none is free).

    The slot is held, and renewed by the process's renewer, for as long as the response is
    being sent, whether or not the client reads it, and given back when it ends; for as
    long, the response counts in `counted` (app/metrics.py, `sse_streams`).
    """
    return held_stream(slots, principal, await slots.take(principal.scope), stream, counted)


def held_stream(
    slots: SseSlots, principal: Principal, slot: str | None, stream: AsyncIterator[bytes], counted: Gauge
) -> Stream:
    """`sse_response` with the slot already taken (`SseSlots.take`), e.g. in the same round trip as the job's read."""

    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        with counted.track_inprogress():
            async with slots.holding(principal.scope, slot):
                yield

    return HeldStream(stream, hold=hold, media_type="text/event-stream", headers=SSE_HEADERS)


def requested_offset(request: Request, after: str | None, last_event_id: str | None) -> tuple[str, bool]:
    """Where an SSE client resumes: (offset, whether it asked for one).

    `Last-Event-ID` (what EventSource sends on reconnect) wins over `?after=`, then
    `?last_event_id=`; none means the beginning. A malformed id is InvalidRequest (400).
    """
    raw = request.headers.get("last-event-id") or after or last_event_id
    return (parse_offset(raw), True) if raw else (BEGINNING, False)


def token_ttl(settings: Settings, request: TokenRequest | None) -> int:
    """The lifetime a token request asks for, within the configured bounds (InvalidRequest if not)."""
    ttl = request.ttl_s if request and request.ttl_s is not None else settings.token_ttl_s
    if not 1 <= ttl <= settings.token_max_ttl_s:
        raise InvalidRequest(f"ttl_s must be between 1 and {settings.token_max_ttl_s} seconds, got {ttl}")
    return ttl


async def with_download_token(job: JobState, principal: Principal, signer: TokenSigner, settings: Settings) -> JobState:
    """`job` with a read-only token in its artifact's `download_url` (unchanged without an artifact)."""
    if job.artifact is None:
        return job
    token, _ = await signer.issue(principal, job.id, settings.token_ttl_s)
    return job.with_download_token(token)


async def submit_counted(
    service: JobService,
    submit_rate: SubmitRate,
    principal: Principal,
    kind: str,
    params: dict[str, Any],
    max_attempts: int | None,
    idempotency_key: str | None,
) -> tuple[JobState, bool]:
    """Submit for `principal` within its submissions limit (429 when over); (state, created).

    A place is taken before anything is created and given back unless a job was: a repeat,
    a refusal or a failure does not count.
    """
    place = await submit_rate.take(principal.scope)
    created = False
    try:
        job, created = await service.submit(kind, params, max_attempts, idempotency_key, tenant=principal.tenant)
    finally:
        if not created:
            await submit_rate.give_back(place)
    return job, created


def content_disposition(name: str, *, fallback: str, kind: Literal["attachment", "inline"] = "attachment") -> str:
    """A Content-Disposition naming the file `name` (RFC 6266), whatever its script.

    `filename=` gets an ASCII version of the name (accents dropped, other characters
    gone; `fallback` as the stem when nothing is left), which every client reads; when
    that differs from the name, `filename*=UTF-8''…` (RFC 5987) carries the name itself,
    which browsers and `curl -OJ` prefer.
    """
    stem, dot, extension = name.rpartition(".") if "." in name else (name, "", "")
    plain = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    plain = re.sub(r"[^A-Za-z0-9._-]+", "-", plain).strip("-.") or fallback
    ascii_name = f"{plain}{dot}{re.sub(r'[^A-Za-z0-9]+', '', extension)}"
    header = f'{kind}; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header

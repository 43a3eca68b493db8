"""/jobs: submit, list, status, history, events (SSE), artifact, tokens, cancel, delete.

Every route acts for the request's principal (app/api/access.py): a tenant sees only
its own jobs, and another tenant's job answers 404 exactly like a missing one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, HttpMethod, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, Schema
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.params import FromQuery, HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.response import File, Stream
from litestar.types import Scope

from jobtrail.api.access import JOB_TOKEN, GuardedInPlace
from jobtrail.api.common import (
    SSE_ROUTE,
    JobId,
    asked_job_id,
    content_disposition,
    error_responses,
    held_stream,
    json_response,
    requested_offset,
    submit_counted,
    token_ttl,
    visible_job,
    with_download_token,
)
from jobtrail.api.schemas import (
    CancelRequest,
    HistoryPage,
    JobPage,
    JobStreamMessage,
    SubmitRequest,
    TokenOut,
    TokenRequest,
)
from jobtrail.artifacts import ArtifactStore
from jobtrail.auth import Principal
from jobtrail.config import Settings
from jobtrail.errors import ArtifactNotFound, Forbidden, JobNotFinished, JobNotFound
from jobtrail.eventlog import EventLog
from jobtrail.events import State, ms_to_datetime
from jobtrail.follow import REPLAY_PAGE
from jobtrail.index import Cursor, JobIndex
from jobtrail.jobstate import JobState
from jobtrail.offsets import BEGINNING, is_after, parse_offset
from jobtrail.service import JobService
from jobtrail.services import Services
from jobtrail.sse import job_event_stream
from jobtrail.tokens import TokenSigner

NDJSON = "application/x-ndjson"
_NDJSON_PAGE = 500  # events per chunk of an NDJSON history
_encode = msgspec.json.Encoder().encode


def _listed_tenant(principal: Principal, asked: str | None) -> str | None:
    """Whose index a listing reads: the key's own tenant's, or for an admin the one asked for (None: all)."""
    if principal.admin:
        return asked
    if asked is not None and asked != principal.tenant:
        # A 403, not an empty page: an empty list would read as "that tenant has no jobs".
        raise Forbidden(f"only an admin key lists another tenant's jobs; this key lists tenant {principal.tenant!r}")
    return principal.tenant


def _etag(job: JobState) -> str:
    return f'"{job.last_event_id}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


@dataclass
class _HistoryOperation(Operation):
    """Documents the NDJSON form of a job's history next to the JSON page."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, Reference):
            ok.content = {**(ok.content or {}), NDJSON: OpenAPIMediaType(
                schema=Reference(ref="#/components/schemas/EventOut"),
            )}


# How Litestar documents `Annotated[str | None, HeaderParameter(name="If-None-Match", required=False)]`.
_IF_NONE_MATCH = OpenAPIParameter(
    name="If-None-Match",
    param_in=ParamType.HEADER,
    schema=Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
    required=False,
)


@dataclass
class _StatusOperation(Operation):
    """Documents the `If-None-Match` header that `status` reads from the scope itself.

    As a parameter of the handler, Litestar would build the request's whole `Headers`
    (a multidict of every header) for it on each `GET /jobs/{id}`; the document stays the
    same, the header in the same place, after the path's parameters.
    """

    def __post_init__(self) -> None:
        params = list(self.parameters or [])
        at = sum(1 for p in params if isinstance(p, OpenAPIParameter) and p.param_in == ParamType.PATH)
        self.parameters = [*params[:at], _IF_NONE_MATCH, *params[at:]]


def _if_none_match(scope: Scope) -> str | None:
    """The request's first `If-None-Match`, as Litestar's `Headers` would give it (ASGI names are lowercase)."""
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return value.decode("latin-1")
    return None


async def _ndjson_history(events: EventLog, job_id: str, after: str) -> AsyncIterator[bytes]:
    # One chunk per page of the stream: memory stays bounded however long the job is.
    lines: list[bytes] = []
    async for event in events.events(job_id, after=after, page_size=_NDJSON_PAGE):
        lines.append(_encode(event.out()) + b"\n")
        if len(lines) == _NDJSON_PAGE:
            yield b"".join(lines)
            lines.clear()
    if lines:
        yield b"".join(lines)


class JobsController(Controller):
    path = "/jobs"
    tags = ("jobs",)

    @GuardedInPlace(
        "/",
        http_method=HttpMethod.POST,
        status_code=202,
        summary="Submit a job",
        description="Creates a job and queues it. With `Idempotency-Key`, repeating the request "
        "returns the job the key first created, with status 200.",
        responses={
            200: ResponseSpec(data_container=JobState, description="Idempotent repeat: the existing job"),
            **error_responses(400, 409, 413, 415, 422, 429, 503),
        },
    )
    async def submit(
        self,
        request: Request[Principal, Any, Any],
        data: JSONBody[SubmitRequest],
        services: NamedDependency[Services],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", required=False, min_length=1, max_length=255)
        ] = None,
    ) -> Response[JobState]:
        # One dependency, as `status`: several would cost a task group per request.
        job, created = await submit_counted(
            services.service, services.submit_rate, request.user, data.kind, data.params, data.max_attempts,
            idempotency_key,
        )
        return json_response(job, status_code=202 if created else 200, headers={"Location": f"/jobs/{job.id}"})

    @get(
        "/",
        summary="List jobs, newest first",
        description="A tenant key lists its own tenant's jobs; an admin key every tenant's, or one tenant's with "
        "`tenant`. A tenant key may name only its own tenant there (another is a 403).",
        responses=error_responses(400, 403, 503),
    )
    async def list_jobs(
        self,
        index: NamedDependency[JobIndex],
        principal: NamedDependency[Principal],
        state_filter: Annotated[
            State | None, QueryParameter(name="state", description="Only jobs in this state")
        ] = None,
        kind: Annotated[str | None, Parameter(max_length=100)] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=1000)] = None,
        tenant: Annotated[str | None, Parameter(
            min_length=1, max_length=100, description="Only this tenant's jobs (an admin key's filter)",
        )] = None,
    ) -> JobPage:
        jobs, next_cursor = await index.page(
            limit=limit,
            cursor=Cursor.decode(cursor) if cursor else None,
            state=state_filter,
            kind=kind,
            tenant=_listed_tenant(principal, tenant),
        )
        return JobPage(jobs=jobs, next=next_cursor.encode() if next_cursor else None)

    @GuardedInPlace(
        "/{job_id:str}",
        http_method=HttpMethod.GET,
        summary="Current state of a job",
        description="One Redis read. Sends an `ETag`; `If-None-Match` with it answers 304 until the job changes.",
        responses={304: ResponseSpec(data_container=None, description="Not modified"), **error_responses(404, 503)},
        operation_class=_StatusOperation,
    )
    async def status(
        self,
        request: Request[Principal, Any, Any],
        job_id: JobId,
        services: NamedDependency[Services],
        download_token: Annotated[bool, Parameter(
            description="Put a read-only token (`JOBTRAIL_TOKEN_TTL_S`) in the artifact's `download_url`, for a "
            "client that downloads without an `Authorization` header",
        )] = False,
    ) -> Response[JobState]:
        # The hot read: one dependency (several cost a task group per request) and the
        # principal the guard found, not a dependency of its own.
        principal = request.user
        job = await visible_job(services.events, principal, job_id, services.reads.run)
        etag = _etag(job)
        if download_token:
            # No 304 here: a cached body would hold a token that may have expired.
            tokened = await with_download_token(job, principal, services.signer, services.settings)
            return json_response(tokened, headers={"ETag": etag})
        if _matches(_if_none_match(request.scope), etag):
            return Response(None, status_code=304, headers={"ETag": etag})  # type: ignore[arg-type]
        return json_response(job, headers={"ETag": etag})

    @get(
        "/{job_id:str}/history",
        summary="A page of a job's events, oldest first; or all of them as NDJSON",
        description="With `Accept: application/json` (the default), one page of up to `limit` events and the "
        "cursor of the next. With `Accept: application/x-ndjson`, every event after `after` (`limit` is ignored), "
        "streamed one JSON object per line, oldest first, in the same shape as the page's events.",
        responses={
            200: ResponseSpec(data_container=HistoryPage, description="A page of events, or (NDJSON) all of them"),
            **error_responses(400, 404, 503),
        },
        operation_class=_HistoryOperation,
        opt=JOB_TOKEN,
    )
    async def history(
        self,
        request: Request,
        job_id: JobId,
        events: NamedDependency[EventLog],
        principal: NamedDependency[Principal],
        after: Annotated[str | None, Parameter(description="Event id to start after (exclusive)")] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> Response[HistoryPage] | Stream:
        # Annotated with Response types: a data annotation would pin the handler's media type
        # to JSON, which litestar then gives the NDJSON stream too.
        offset = parse_offset(after) if after else BEGINNING
        await visible_job(events, principal, job_id)  # 404 before the stream starts
        if request.accept.best_match(["application/json", NDJSON], default="application/json") == NDJSON:
            return Stream(_ndjson_history(events, job_id, offset), media_type=NDJSON)
        page = await events.history_page(job_id, offset, limit)
        return Response(HistoryPage(
            events=[event.out() for event in page],
            next=page[-1].id if len(page) == limit else None,
        ))

    @GuardedInPlace(
        "/{job_id:str}/events",
        http_method=HttpMethod.GET,
        summary="Server-sent events of a job: replay, then live, then close after the terminal event",
        description="Starts after `Last-Event-ID` (header), else `after` or `last_event_id` (query), else from "
        "the beginning. Each message has `id:` (the event id), `event:` (its type) and `data:` (the event as in "
        "history). A `gap` event carrying the job's state comes first when events after the offset were trimmed. "
        "A finished job whose terminal event the client already has answers 204, which tells an EventSource to "
        "stop reconnecting. A reconnect (a `Last-Event-ID` header) that meets the tenant's stream limit or a Redis "
        "outage answers 200 with only a `retry:` hint and a comment saying why, then ends, so an EventSource keeps "
        "trying; without the header those are 429 and 503.",
        responses={
            200: ResponseSpec(
                data_container=JobStreamMessage, media_type="text/event-stream", generate_examples=False,
                description="The event stream, one message per event",
            ),
            204: ResponseSpec(data_container=None, description="The job is finished and the client has every event"),
            **error_responses(400, 404, 429, 503),
        },
        opt={**JOB_TOKEN, **SSE_ROUTE},
    )
    async def events(
        self,
        request: Request[Principal, Any, Any],
        job_id: JobId,
        services: NamedDependency[Services],
        after: FromQuery[str | None] = None,
        last_event_id: FromQuery[str | None] = None,
    ) -> Stream | Response[None]:
        # One dependency and the guard's principal, as `status`: W1's 200 observers connect
        # at once, and each dependency more cost a task group per request.
        principal = request.user
        offset, _ = requested_offset(request, after, last_event_id)
        slots = services.sse_slots
        # The state, the gap and the first replay page in one round trip (app/opening.py),
        # and the stream's slot in another at the same time: an observer's first events wait
        # for one round trip, not two. A slot taken for a request that then sends no stream
        # (404, 204) is given back at once.
        opening, slot = await asyncio.gather(
            services.opener.open(asked_job_id(principal, job_id), principal.tenant, offset, REPLAY_PAGE,
                                 sees_all=principal.admin, shared=services.reads.run),
            slots.take(principal.scope),
            return_exceptions=True,
        )
        if isinstance(opening, BaseException):
            if not isinstance(slot, BaseException):
                await slots.give_back(principal.scope, slot)
            raise opening  # a 404 (or 503) before a 429, as when the two were asked in turn
        if isinstance(slot, BaseException):
            raise slot
        job = opening.job
        if job.terminal and not is_after(job.last_event_id, offset):
            await slots.give_back(principal.scope, slot)
            return Response(None, status_code=204)
        settings, events = services.settings, services.events
        stream = job_event_stream(
            events, services.hub, job, offset, gap=is_after(opening.deleted_through, offset),
            retry_ms=settings.sse_retry_ms, ping_s=settings.sse_ping_s, first=opening.page,
        )
        return held_stream(slots, principal, slot, stream, events.metrics.sse_streams("job"))

    @get(
        "/{job_id:str}/artifact",
        summary="Download the file a succeeded job produced",
        description="Streams the artifact with its content type and a `Content-Disposition` naming it. "
        "404 when the job has no artifact, 409 while the job is still pending or running.",
        responses={
            200: ResponseSpec(data_container=bytes, media_type="*/*", description="The file, in its own content type"),
            **error_responses(404, 409, 503),
        },
        opt=JOB_TOKEN,
    )
    async def artifact(
        self,
        job_id: JobId,
        events: NamedDependency[EventLog],
        artifacts: NamedDependency[ArtifactStore],
        principal: NamedDependency[Principal],
    ) -> File:
        job = await visible_job(events, principal, job_id)
        if not job.terminal:
            raise JobNotFinished(job.id, job.state)
        artifact = job.artifact
        path = artifacts.path(job.id, artifact) if artifact else None
        if artifact is None or path is None or not path.is_file():
            raise ArtifactNotFound(job.id)
        return File(
            path=path,
            filename=artifact.name,
            media_type=artifact.content_type,
            # Litestar's own header gives a non-ASCII name no ASCII `filename=` to fall back on.
            headers={"ETag": f'"{artifact.sha256}"',
                     "Content-Disposition": content_disposition(artifact.name, fallback=job.id)},
        )

    @post(
        "/{job_id:str}/cancel",
        status_code=202,
        summary="Cancel a job",
        description="A pending job is cancelled at once; a running one is asked to stop, which its handler does at "
        "its next progress report. The body (a reason) is optional.",
        responses=error_responses(400, 404, 409, 413, 415, 503),
    )
    async def cancel(
        self,
        job_id: JobId,
        service: NamedDependency[JobService],
        events: NamedDependency[EventLog],
        principal: NamedDependency[Principal],
        data: JSONBody[CancelRequest | None] = None,
    ) -> JobState:
        job = await visible_job(events, principal, job_id)
        return await service.cancel(job.id, data.reason if data else None)

    @delete(
        "/{job_id:str}", status_code=204, summary="Delete a job and all its events", responses=error_responses(404, 503)
    )
    async def remove(
        self,
        job_id: JobId,
        service: NamedDependency[JobService],
        events: NamedDependency[EventLog],
        principal: NamedDependency[Principal],
    ) -> None:
        job = await visible_job(events, principal, job_id)
        if not await service.delete(job.id, job.tenant):
            raise JobNotFound(job_id)

    @post(
        "/{job_id:str}/tokens",
        status_code=201,
        summary="Issue a read-only token for one job",
        description="For clients that cannot send an `Authorization` header, such as a browser's EventSource: "
        "pass the token as `?token=` to this job's `/events`, `/history` and `/artifact`, and nowhere else. "
        "It expires after `ttl_s` seconds (default `JOBTRAIL_TOKEN_TTL_S`, at most `JOBTRAIL_TOKEN_MAX_TTL_S`). "
        "Issuing one takes an API key; a token cannot make another.",
        responses=error_responses(400, 404, 413, 415, 503),
    )
    async def token(
        self,
        job_id: JobId,
        events: NamedDependency[EventLog],
        principal: NamedDependency[Principal],
        signer: NamedDependency[TokenSigner],
        settings: NamedDependency[Settings],
        data: JSONBody[TokenRequest | None] = None,
    ) -> TokenOut:
        job = await visible_job(events, principal, job_id)
        token, expires = await signer.issue(principal, job.id, token_ttl(settings, data))
        return TokenOut(
            token=token, expires_at=ms_to_datetime(expires * 1000), job_id=job.id,
            events_url=f"/jobs/{job.id}/events?token={token}",
        )


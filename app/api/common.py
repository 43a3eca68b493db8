"""Pieces every route module shares: job id checks, SSE offsets and headers, error specs."""

from __future__ import annotations

from typing import Annotated

from litestar import Request
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from app.api.schemas import ErrorBody
from app.errors import JobNotFound
from app.keys import JOB_ID_RE
from app.offsets import BEGINNING, parse_offset

JobId = Annotated[str, Parameter(description="Job id", max_length=128)]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body says what to fix",
    404: "No such job (or it has expired)",
    409: "The job's state does not allow this",
    413: "Request body too large",
    422: "Unknown job kind or params the kind rejects",
    503: "Redis is not answering; retry after `Retry-After` seconds",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the given error statuses, all with the ErrorBody shape."""
    return {c: ResponseSpec(data_container=ErrorBody, description=_ERROR_DESCRIPTIONS[c]) for c in codes}


def checked_job_id(job_id: str) -> str:
    """The id, or JobNotFound: an id no job can have never reaches a Redis key name."""
    if not JOB_ID_RE.match(job_id):
        raise JobNotFound(job_id)
    return job_id


def requested_offset(request: Request, after: str | None, last_event_id: str | None) -> tuple[str, bool]:
    """Where an SSE client resumes: (offset, whether it asked for one).

    `Last-Event-ID` (what EventSource sends on reconnect) wins over `?after=`, then
    `?last_event_id=`; none means the beginning. A malformed id is InvalidRequest (400).
    """
    raw = request.headers.get("last-event-id") or after or last_event_id
    return (parse_offset(raw), True) if raw else (BEGINNING, False)

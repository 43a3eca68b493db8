"""Request and response bodies of the HTTP API (the OpenAPI schema is built from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar.openapi.spec import Reference, Schema
from litestar.params import KwargDefinition

from jobtrail.events import EventOut
from jobtrail.jobstate import JobState


class SubmitRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    max_attempts: int | None = None


class CancelRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class HistoryPage(msgspec.Struct, frozen=True):
    events: list[EventOut]
    next: str | None  # pass as `after` for the next page; null when the job has no more events yet


class JobPage(msgspec.Struct, frozen=True):
    jobs: list[JobState]
    next: str | None  # pass as `cursor` for the next page; null at the end


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl_s: Annotated[int, msgspec.Meta(ge=1)] | None = None  # seconds; default JOBTRAIL_TOKEN_TTL_S


class TokenOut(msgspec.Struct, frozen=True):
    token: str  # pass as `?token=`
    expires_at: datetime
    job_id: str | None  # null: a token for the activity feed
    events_url: str  # the event stream this token opens, token included


def _json_of(*components: str) -> KwargDefinition:
    """Documents a string field that holds JSON, of one of the named component schemas if any."""
    refs = [Reference(ref=f"#/components/schemas/{name}") for name in components]
    extra: dict[str, Any] = {"content_media_type": "application/json"}
    if refs:
        extra["content_schema"] = refs[0] if len(refs) == 1 else Schema(any_of=refs)
    return KwargDefinition(schema_extra=extra)


# For text/event-stream, OpenAPI 3.1 takes the schema as that of one message (one event),
# as an EventSource parses it. Their ResponseSpecs need generate_examples=False: litestar
# cannot build examples for these annotations.


class JobStreamMessage(msgspec.Struct, frozen=True):
    """One message of a job's event stream."""

    event: str  # the event's type, or `gap`
    data: Annotated[str, _json_of("EventOut", "JobState")]  # the event; for `gap`, the job's state
    id: str | None = None  # the event's id; none on `gap`


class ActivityStreamMessage(msgspec.Struct, frozen=True):
    """One message of the activity feed (`data`: `{id, job_id, kind, type, state, at, event_id, attempt, tenant}`)."""

    event: str  # the transition's type, or `gap`
    data: Annotated[str, _json_of()]
    id: str | None = None  # the feed entry's id; none on `gap`


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    error: str  # a stable code, e.g. "job_not_found"
    detail: str  # what went wrong and what to do about it
    extra: Any = None


class Health(msgspec.Struct, frozen=True):
    status: str

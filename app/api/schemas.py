"""Request and response bodies of the HTTP API (the OpenAPI schema is built from these)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from app.events import EventOut
from app.jobstate import JobState


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


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    error: str  # a stable code, e.g. "job_not_found"
    detail: str  # what went wrong and what to do about it
    extra: Any = None


class Health(msgspec.Struct, frozen=True):
    status: str

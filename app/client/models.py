"""What the API answers, as the client decodes it: msgspec Structs mirroring its JSON.

These mirror the server's wire types (app/jobstate.py, app/events.py, app/activity.py)
without importing them: the client must not need the server's modules. Decoding is
lenient on purpose, so that a newer server does not break an older client: unknown
fields are ignored, fields a server might omit have defaults, and `state` and `type`
are plain strings rather than enums (a state this client does not know still decodes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    """The file a job produced; `sha256` is checked by `download_artifact`."""

    name: str
    size_bytes: int = 0
    sha256: str = ""
    content_type: str = "application/octet-stream"


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """A job's current state (`GET /jobs/{id}`)."""

    id: str
    state: str  # pending, running, succeeded, failed, cancelled
    kind: str = ""
    progress: float = 0.0
    phase: str | None = None
    message: str | None = None
    attempt: int = 0
    max_attempts: int = 1
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    last_event_id: str = ""
    event_count: int = 0
    result: Any = None
    error: dict[str, Any] | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    artifact: Artifact | None = None
    tenant: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a job, as history pages and the job's SSE stream carry it."""

    id: str  # the stream entry id: the offset to resume after
    type: str
    at: datetime
    attempt: int = 0
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_STATES  # the terminal events are named as their states


class Gap(msgspec.Struct, frozen=True):
    """Events after the client's offset were trimmed from the job's stream; `state` is the job's now.

    `events()` yields it where the API sends it, before the events it still holds.
    """

    state: JobState


class HistoryPage(msgspec.Struct, frozen=True):
    events: list[Event]
    next: str | None = None


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A read-only token for one job (`POST /jobs/{id}/tokens`)."""

    token: str
    expires_at: datetime
    job_id: str | None = None
    events_url: str = ""


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the activity feed (`GET /events`); `event_id` is the event's id in its job's stream."""

    id: str
    job_id: str
    type: str
    state: str
    at: datetime
    event_id: str = ""
    kind: str | None = None
    attempt: int = 0
    tenant: str | None = None


class FeedGap(msgspec.Struct, frozen=True):
    """Feed entries after the client's offset were trimmed; the feed now starts at `first_available`."""

    first_available: str | None = None

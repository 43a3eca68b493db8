"""The current state of a job, as `GET /jobs/{id}` returns it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.events import TERMINAL_STATES, Artifact, State, ms_to_datetime


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    state: State
    progress: float
    phase: str | None
    message: str | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    last_event_id: str
    event_count: int
    result: Any
    error: dict[str, Any] | None
    params: dict[str, Any]
    artifact: Artifact | None = None
    tenant: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_hash(cls, job_id: str, fields: dict[str, str]) -> JobState:
        """Decode HGETALL of a job's hash (which holds at least `state`)."""

        def stamp(name: str) -> datetime | None:
            raw = fields.get(name)
            return ms_to_datetime(int(raw)) if raw else None

        def json_field(name: str) -> Any:
            raw = fields.get(name)
            return msgspec.json.decode(raw) if raw else None

        return cls(
            id=job_id,
            kind=fields.get("kind", ""),
            state=State(fields["state"]),
            progress=float(fields.get("progress") or 0),
            phase=fields.get("phase") or None,
            message=fields.get("message") or None,
            attempt=int(fields.get("attempt") or 0),
            max_attempts=int(fields.get("max_attempts") or 1),
            cancel_requested=fields.get("cancel_requested") == "1",
            created_at=stamp("created_at"),
            started_at=stamp("started_at"),
            finished_at=stamp("finished_at"),
            updated_at=stamp("updated_at"),
            last_event_id=fields.get("last_event_id", ""),
            event_count=int(fields.get("event_count") or 0),
            result=json_field("result"),
            error=json_field("error"),
            params=json_field("params") or {},
            artifact=msgspec.json.decode(fields["artifact"], type=Artifact) if fields.get("artifact") else None,
            tenant=fields.get("tenant") or None,
        )

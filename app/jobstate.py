"""The current state of a job, as `GET /jobs/{id}` returns it.

Two fields are derived when the hash is read rather than stored in it: `expires_at`, from
the expiry time of the job's keys (set by the terminal event's retention, or kept from a
migrated legacy key), and the artifact's `download_url`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from jobtrail.events import TERMINAL_STATES, Artifact, State, ms_to_datetime
from jobtrail.keys import DEDUPE_FIELD


class ArtifactOut(Artifact, frozen=True):
    """An artifact as the API shows it: what the job recorded, and where to download it."""

    download_url: str  # the path of GET /jobs/{id}/artifact (with `?token=` when one was asked for)


def artifact_path(job_id: str) -> str:
    return f"/jobs/{job_id}/artifact"


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
    artifact: ArtifactOut | None = None
    tenant: str | None = None
    # None while the job lives; once its keys have a TTL (after its terminal event, or
    # kept from a migrated legacy key), when they expire and the job answers 404.
    expires_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_hash(cls, job_id: str, fields: dict[str, str], expires_ms: int = -1) -> JobState:
        """Decode HGETALL of a job's hash (which holds at least `state`).

        `expires_ms` is the hash's PEXPIRETIME read with it (negative: no TTL): the
        absolute expiry, so every read of one job answers the same `expires_at`.
        """

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
            artifact=_artifact_out(job_id, fields.get("artifact")),
            tenant=fields.get("tenant") or None,
            expires_at=ms_to_datetime(expires_ms) if expires_ms >= 0 else None,
        )

    def with_download_token(self, token: str) -> JobState:
        """This state with the artifact's download URL carrying a read-only token."""
        if self.artifact is None:
            return self
        url = f"{artifact_path(self.id)}?token={token}"
        return msgspec.structs.replace(self, artifact=msgspec.structs.replace(self.artifact, download_url=url))


def state_fields(fields: dict[str, str]) -> dict[str, str]:
    """A job's hash without the fields that remember idempotency keys (app/keys.py: DEDUPE_FIELD):
    what the fold of its stream equals (app/reducer.py)."""
    return {name: value for name, value in fields.items() if not name.startswith(DEDUPE_FIELD)}


def dedupe_fields(fields: dict[str, str]) -> dict[str, str]:
    """The fields of a job's hash that `state_fields` leaves out."""
    return {name: value for name, value in fields.items() if name.startswith(DEDUPE_FIELD)}


def _artifact_out(job_id: str, raw: str | None) -> ArtifactOut | None:
    if not raw:
        return None
    recorded = msgspec.json.decode(raw, type=Artifact)
    return ArtifactOut(**msgspec.structs.asdict(recorded), download_url=artifact_path(job_id))

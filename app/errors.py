"""Errors are types that carry their HTTP answer: a status and a code, declared on the class.

`class JobNotFound(JobtrailError, status=404, code="job_not_found")` sets both through
`__init_subclass__`, and a subclass that declares neither answers as its parent does
(`JobReplaced` as `TransitionRefused`, `UnknownKind` as `InvalidParams`). So one handler,
registered for `JobtrailError` (app/api/errors.py), answers every one of them, including
one written after it, and `error_codes()` finds every code by walking the hierarchy.
Headers (`Retry-After`, `WWW-Authenticate`) come from the type too (`headers`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class JobtrailError(Exception):
    """Base of every error jobtrail raises on purpose.

    One that declares no status of its own answers 500 `internal_error`, logged as a bug.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if (status is None) != (code is None):
            raise TypeError(f"{cls.__name__}: declare both status and code, or neither (to inherit them)")
        if status is not None and code is not None:
            cls.status = status
            cls.code = code

    def headers(self) -> dict[str, str] | None:
        """Headers the HTTP answer carries besides the body."""
        return None

    def sse_reconnect(self) -> tuple[str, int] | None:
        """For an event stream's reconnect: (why, seconds) to answer with a `retry:` hint instead.

        None: the reconnect gets the status like any request (app/api/errors.py, reconnect_later).
        """
        return None


class JobNotFound(JobtrailError, status=404, code="job_not_found"):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist (or has expired)")
        self.job_id = job_id


class ArtifactNotFound(JobtrailError, status=404, code="artifact_not_found"):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} has no artifact")
        self.job_id = job_id


class JobNotFinished(JobtrailError, status=409, code="job_not_finished"):
    """What was asked exists only once the job has finished."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id!r} is {state}; its artifact is available once it has succeeded")
        self.job_id = job_id
        self.state = state


class JobExists(JobtrailError, status=409, code="job_exists"):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} already exists")
        self.job_id = job_id


class TransitionRefused(JobtrailError, status=409, code="transition_refused"):
    """The event is not allowed in the job's current state; nothing was written."""

    def __init__(self, job_id: str, event_type: str, state: str) -> None:
        super().__init__(f"event '{event_type}' is not allowed while job {job_id!r} is {state}")
        self.job_id = job_id
        self.event_type = event_type
        self.state = state


class AttemptSuperseded(TransitionRefused):
    """The event names an attempt that is no longer the job's (another worker took it over)."""

    def __init__(self, job_id: str, event_type: str, state: str, attempt: int, current: int) -> None:
        JobtrailError.__init__(
            self, f"event '{event_type}' of attempt {attempt} refused: job {job_id!r} is at attempt {current}"
        )
        self.job_id = job_id
        self.event_type = event_type
        self.state = state
        self.attempt = attempt
        self.current = current


class JobReplaced(TransitionRefused):
    """The event names an incarnation the job no longer is: it was deleted, and a new job took its id."""

    def __init__(self, job_id: str, event_type: str, state: str) -> None:
        JobtrailError.__init__(
            self, f"event '{event_type}' refused: job {job_id!r} was deleted and submitted again since this "
            "writer loaded it"
        )
        self.job_id = job_id
        self.event_type = event_type
        self.state = state


class InvalidRequest(JobtrailError, status=400, code="invalid_request"):
    """Input the caller can fix."""


class UnsupportedMediaType(JobtrailError, status=415, code="unsupported_media_type"):
    """A request body in a content type the route does not take."""


class InvalidParams(JobtrailError, status=422, code="invalid_params"):
    """A submission the job kind rejects."""


class UnknownKind(InvalidParams):
    """No kind of that name is registered here: a 422 at submit; a worker fails such a job at once."""

    def __init__(self, kind: str, known: list[str]) -> None:
        super().__init__(f"unknown job kind {kind!r}; known kinds: {', '.join(known) or 'none'}")
        self.kind = kind
        self.known = known


class IdempotencyConflict(JobtrailError, status=409, code="idempotency_conflict"):
    """An Idempotency-Key reused with a different request body."""


class StoreUnavailable(JobtrailError, status=503, code="store_unavailable"):
    """Redis did not answer; the caller should retry later."""


class RateLimited(JobtrailError, status=429, code="rate_limited"):
    """Over a per-tenant limit; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}

    def sse_reconnect(self) -> tuple[str, int]:
        # Only the open-streams limit is raised on an event stream's route.
        return "too many open event streams", self.retry_after_s


class NotAuthenticated(JobtrailError, status=401, code="not_authenticated"):
    """No valid API key or token."""

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(JobtrailError, status=403, code="forbidden"):
    """A valid key that may not do this: a tenant's key on `/metrics` (it needs an admin key), or naming
    another tenant in `GET /jobs?tenant=`."""


class UpgradeRequired(JobtrailError, status=426, code="upgrade_required"):
    """A plain GET of a WebSocket endpoint (/ws): connect with a WebSocket client instead."""

    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket", "Connection": "Upgrade"}

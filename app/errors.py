"""Errors are types; `app/api/errors.py` maps each to an HTTP answer once."""

from __future__ import annotations


class JobtrailError(Exception):
    """Base of every error jobtrail raises on purpose."""


class JobNotFound(JobtrailError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist (or has expired)")
        self.job_id = job_id


class ArtifactNotFound(JobtrailError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} has no artifact")
        self.job_id = job_id


class JobNotFinished(JobtrailError):
    """What was asked exists only once the job has finished (HTTP 409)."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id!r} is {state}; its artifact is available once it has succeeded")
        self.job_id = job_id
        self.state = state


class JobExists(JobtrailError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} already exists")
        self.job_id = job_id


class TransitionRefused(JobtrailError):
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


class InvalidRequest(JobtrailError):
    """Input the caller can fix (HTTP 400)."""


class UnsupportedMediaType(JobtrailError):
    """A request body in a content type the route does not take (HTTP 415)."""


class InvalidParams(JobtrailError):
    """A submission the job kind rejects (HTTP 422)."""


class UnknownKind(InvalidParams):
    """No kind of that name is registered here: a 422 at submit; a worker fails such a job at once."""

    def __init__(self, kind: str, known: list[str]) -> None:
        super().__init__(f"unknown job kind {kind!r}; known kinds: {', '.join(known) or 'none'}")
        self.kind = kind
        self.known = known


class IdempotencyConflict(JobtrailError):
    """An Idempotency-Key reused with a different request body (HTTP 409)."""


class StoreUnavailable(JobtrailError):
    """Redis did not answer; the caller should retry later (HTTP 503)."""


class RateLimited(JobtrailError):
    """Over a per-tenant limit (HTTP 429); `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotAuthenticated(JobtrailError):
    """No valid API key or token (HTTP 401)."""

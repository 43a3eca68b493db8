"""The client's error types, and the one function that maps an API answer to one of them.

The API answers every error as `{"error": code, "detail": text}` with a status that
says its class (app/api/errors.py). The client picks the type by status, then by code
where one status holds several (404 for a job or for its artifact). A body that is not
the API's (a proxy's HTML page, say) still becomes a typed error, with the status as
its code. Transport failures (refused, reset, timed out) are `Unavailable` with no
status: to a caller, "the API is not answering" is one condition however it shows.
"""

from __future__ import annotations

import msgspec


class ClientError(Exception):
    """Base of every error the client raises: `status` (None: no answer), `code`, `detail`."""

    def __init__(self, status: int | None, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if status is None else f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class InvalidRequest(ClientError):
    """400 or 413: a malformed request (an offset, a parameter, a body too large)."""


class Unauthorized(ClientError):
    """401 (or 403): no valid API key, or a token that is expired or for something else."""


class NotFound(ClientError):
    """404: what was asked for does not exist (or belongs to another tenant)."""


class JobNotFound(NotFound):
    """404 job_not_found: no such job, it has expired, or it belongs to another tenant."""


class ArtifactNotFound(NotFound):
    """404 artifact_not_found: the job exists but produced no file."""


class Conflict(ClientError):
    """409: the job's state does not allow this (a refused transition, an unfinished job's
    artifact, an idempotency key reused with another body)."""


class InvalidParams(ClientError):
    """422: an unknown kind, or params the kind rejects."""


class RateLimited(ClientError):
    """429: over a per-tenant limit; `retry_after` is the seconds the API asked to wait."""

    def __init__(self, status: int | None, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, detail)
        self.retry_after = retry_after


class Unavailable(ClientError):
    """503 (Redis is away), another 5xx, or no answer at all; `retry_after` when the API gave one."""

    def __init__(self, status: int | None, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, detail)
        self.retry_after = retry_after


class WaitTimeout(ClientError, TimeoutError):
    """`wait(id, timeout=…)` ran out of time before the job ended."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(None, "wait_timeout", f"job {job_id!r} did not finish within {timeout:g} s")
        self.job_id = job_id
        self.timeout = timeout


class ChecksumMismatch(ClientError):
    """A downloaded artifact's SHA-256 is not the one the API announced; nothing was written."""


class _ErrorBody(msgspec.Struct):
    error: str
    detail: str = ""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidParams,
}
_BY_CODE: dict[str, type[ClientError]] = {"job_not_found": JobNotFound, "artifact_not_found": ArtifactNotFound}


def retry_after(headers: dict[str, str]) -> float | None:
    """The `Retry-After` header in seconds (the API sends seconds; an HTTP date is ignored)."""
    raw = headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def error_from(status: int, headers: dict[str, str], body: bytes) -> ClientError:
    """The typed error for an answer that is not a success (`headers` with lower-case names)."""
    try:
        parsed = msgspec.json.decode(body, type=_ErrorBody)
        code, detail = parsed.error, parsed.detail
    except (msgspec.DecodeError, msgspec.ValidationError):
        code, detail = f"http_{status}", body.decode("utf-8", "replace").strip()[:200] or "(no body)"
    if status == 429:
        return RateLimited(status, code, detail, retry_after(headers))
    if status >= 500:
        return Unavailable(status, code, detail, retry_after(headers))
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, ClientError)
    return cls(status, code, detail)

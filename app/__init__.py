"""jobtrail: every job transition is an event in a per-job Redis stream.

The public API for handler authors: `kind` registers a job kind; its handler gets a
`JobContext` and may raise `PermanentFailure` (fail now, no retry) or meet
`JobCancelled`. The names are imported on first use, so `import jobtrail` stays cheap
and starts nothing (no Redis client, no web framework).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.context import JobCancelled, JobContext, PermanentFailure
    from workers.registry import kind

__all__ = ["JobCancelled", "JobContext", "PermanentFailure", "kind"]


def __getattr__(name: str) -> Any:
    # Plain imports, not module paths in strings, so they follow the package when it moves.
    if name == "kind":
        from workers.registry import kind

        return kind
    if name in ("JobContext", "PermanentFailure", "JobCancelled"):
        from workers.context import JobCancelled, JobContext, PermanentFailure

        return {"JobContext": JobContext, "PermanentFailure": PermanentFailure, "JobCancelled": JobCancelled}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

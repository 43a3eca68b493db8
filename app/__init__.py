"""jobtrail: every job transition is an event in a per-job Redis stream.

The public API is what this module exports; everything else is internal. For handler
authors: `kind` registers a job kind; its handler gets a `JobContext` and may raise
`PermanentFailure` (fail now, no retry) or meet `JobCancelled`. For clients: `Client`,
`AsyncClient` and their errors. Names are imported on first use (PEP 562), so
`import jobtrail` stays cheap and starts nothing: a handler module does not load the
client's httpx, nor a client the server's litestar or redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtrail.client import (
        ArtifactNotFound,
        AsyncClient,
        ChecksumMismatch,
        Client,
        ClientError,
        Conflict,
        InvalidParams,
        InvalidRequest,
        JobNotFound,
        NotFound,
        RateLimited,
        Unauthorized,
        Unavailable,
        WaitTimeout,
    )
    from jobtrail.registry import kind
    from jobtrail.workers.context import JobCancelled, JobContext, PermanentFailure

# Literal lists, not unpacked from others, so that linters and type checkers can read
# `__all__`: first what a handler author imports, then what a client does.
__all__ = ["JobCancelled", "JobContext", "PermanentFailure", "kind"]
_HANDLER_API = frozenset(__all__)
__all__ += [
    "ArtifactNotFound",
    "AsyncClient",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Conflict",
    "InvalidParams",
    "InvalidRequest",
    "JobNotFound",
    "NotFound",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]


def __getattr__(name: str) -> Any:
    # Plain imports, not module paths in strings, so they follow the package when it moves.
    if name in _HANDLER_API:
        from jobtrail import registry
        from jobtrail.workers import context

        value = registry.kind if name == "kind" else getattr(context, name)
    elif name in __all__:
        from jobtrail import client

        value = getattr(client, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # found once; later lookups do not come here
    return value

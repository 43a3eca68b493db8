"""jobtrail: every job transition is an event in a per-job Redis stream.

The public API is what this module exports; everything else is internal. Names are
imported on first use (PEP 562), so `import jobtrail` stays cheap: a handler module
does not load the client's httpx, nor a client the server's litestar or redis.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
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

__all__ = [
    # the client and its errors
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

# public name -> the submodule (relative to this package) that defines it
_LAZY = {name: ".client" for name in __all__}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value

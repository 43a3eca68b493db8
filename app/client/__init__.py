"""The Python client of the jobtrail API (`jobtrail.Client`, `jobtrail.AsyncClient`).

It needs httpx and msgspec only, never the server's modules (litestar, redis): a
program that calls a remote jobtrail imports nothing else. Layout: `core` holds every
operation once, as sans-IO generators of `effects`; `sync` and `aio` perform them with
httpx; `follow` is the reconnecting SSE reader; `models` and `errors` are the types.

Names load on first use (PEP 562): `jobtrail --help` and the CLI's wiring
(app/client/cli.py) import this package without paying for httpx.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtrail.client.aio import AsyncClient
    from jobtrail.client.errors import (
        ArtifactNotFound,
        ChecksumMismatch,
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
    from jobtrail.client.models import Artifact, Event, FeedGap, Gap, HistoryPage, JobState, Token, Transition
    from jobtrail.client.sync import Client

__all__ = [
    "Artifact",
    "ArtifactNotFound",
    "AsyncClient",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Conflict",
    "Event",
    "FeedGap",
    "Gap",
    "HistoryPage",
    "InvalidParams",
    "InvalidRequest",
    "JobNotFound",
    "JobState",
    "NotFound",
    "RateLimited",
    "Token",
    "Transition",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]

_HOME = {
    **{name: ".aio" for name in ("AsyncClient",)},
    **{name: ".sync" for name in ("Client",)},
    **{name: ".models" for name in ("Artifact", "Event", "FeedGap", "Gap", "HistoryPage", "JobState", "Token",
                                    "Transition")},
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOME.get(name, ".errors"), __name__), name)
    globals()[name] = value
    return value

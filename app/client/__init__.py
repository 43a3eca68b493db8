"""The Python client of the jobtrail API (`jobtrail.Client`, `jobtrail.AsyncClient`).

It needs httpx and msgspec only, never the server's modules (litestar, redis): a
program that calls a remote jobtrail imports nothing else. Layout: `core` holds every
operation once, as sans-IO generators of `effects`; `sync` and `aio` perform them with
httpx; `follow` is the reconnecting SSE reader; `models` and `errors` are the types.
"""

from app.client.aio import AsyncClient
from app.client.errors import (
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
from app.client.models import Artifact, Event, FeedGap, Gap, HistoryPage, JobState, Token, Transition
from app.client.sync import Client

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

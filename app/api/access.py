"""Who is asking: the API key (or read-only token) of a request, checked before any route runs.

A guard rather than a middleware: a guard's 401 goes through the same response path
as every other error, request id included. Routes name in their `opt` whether a token
may stand in for a key there: `opt={"token": "job"}` on a job's read-only routes (SSE,
history, artifact), and `opt={"token": "feed"}` on the activity feed; `PUBLIC` routes
need neither. The principal found is the request's `user`.

A presented token is checked in every mode: with access control off (open) a request
without one acts as the open principal, but one with a token acts as that token, so a
forged token is a 401 and a valid one reads only what it covers, as when keys are on.
"""

from __future__ import annotations

from typing import Literal

from litestar.connection import ASGIConnection, Request
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from jobtrail.auth import OPEN, ApiKeys, Principal
from jobtrail.errors import NotAuthenticated
from jobtrail.tokens import TokenRejected, TokenSigner

TokenUse = Literal["job", "feed"]
PUBLIC = {"public": True}  # opt of routes anyone may call (health probes)
# The OpenAPI document is public too: it describes the API, not anybody's jobs.
SCHEMA_PATH = "/schema"
JOB_TOKEN = {"token": "job"}
FEED_TOKEN = {"token": "feed"}


def access_guard(api_keys: ApiKeys, enabled: bool, signer: TokenSigner) -> Guard:
    """The guard of an app whose keys are `api_keys` (checked when `enabled`) and whose tokens `signer` signs."""

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        path = connection.scope["path"]
        if handler.opt.get("public") or path == SCHEMA_PATH or path.startswith(SCHEMA_PATH + "/"):
            return
        if enabled:
            connection.scope["user"] = await principal_of(connection, handler, api_keys, signer)
        else:
            token = connection.query_params.get("token")
            connection.scope["user"] = (
                OPEN if token is None else await token_principal(connection, handler, token, signer)
            )

    return guard


async def principal_of(
    connection: ASGIConnection, handler: BaseRouteHandler, api_keys: ApiKeys, signer: TokenSigner
) -> Principal:
    """The principal a request's key or token stands for; NotAuthenticated if none."""
    header = connection.headers.get("authorization")
    if header:
        scheme, _, key = header.partition(" ")
        principal = api_keys.principal(key.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise NotAuthenticated("the API key is not valid: send `Authorization: Bearer <key>`")
        return principal
    token = connection.query_params.get("token")
    if token is None:
        raise NotAuthenticated("send an API key as `Authorization: Bearer <key>`")
    return await token_principal(connection, handler, token, signer)


async def token_principal(
    connection: ASGIConnection, handler: BaseRouteHandler, token: str, signer: TokenSigner
) -> Principal:
    """The read-only principal `token` stands for on this route; NotAuthenticated if it does not hold here.

    One round trip the first time this process needs the signing key (app/tokens.py), none after.
    """
    use: TokenUse | None = handler.opt.get("token")
    if use is None or not isinstance(connection, Request) or connection.method != "GET":
        raise NotAuthenticated("a token is accepted only on a job's events, history and artifact, and on /events")
    try:
        principal = await signer.verify(token)
    except TokenRejected as exc:
        raise NotAuthenticated(f"token rejected: {exc}") from None
    if (use == "feed") != principal.feed:
        raise NotAuthenticated(f"this token is not for {'the activity feed' if use == 'feed' else 'a job'}")
    return principal

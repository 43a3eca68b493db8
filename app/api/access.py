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

from typing import TYPE_CHECKING, Any, Literal

from litestar.connection import ASGIConnection, Request
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.types import ASGIApp, ExceptionHandlersMap, Guard

from jobtrail.api.common import JsonAnswer
from jobtrail.auth import OPEN, ApiKeys, Principal
from jobtrail.errors import NotAuthenticated
from jobtrail.tokens import TokenRejected, TokenSigner

if TYPE_CHECKING:
    from litestar import Litestar

TokenUse = Literal["job", "feed"]
PUBLIC = {"public": True}  # opt of routes anyone may call (health probes)
# The OpenAPI document is public too: it describes the API, not anybody's jobs.
SCHEMA_PATH = "/schema"
JOB_TOKEN = {"token": "job"}
FEED_TOKEN = {"token": "feed"}
# opt of a route that checks credentials itself (/ws, through SocketAccess).
SELF_AUTHENTICATING = "self_authenticating"


def access_guard(api_keys: ApiKeys, enabled: bool, signer: TokenSigner) -> Guard:
    """The guard of an app whose keys are `api_keys` (checked when `enabled`) and whose tokens `signer` signs."""

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        path = connection.scope["path"]
        if handler.opt.get(SELF_AUTHENTICATING):
            # /ws: refused credentials are told after the handshake (SocketAccess), where
            # a browser can read why; a guard's refusal would be a bare HTTP 403.
            return
        if handler.opt.get("public") or path == SCHEMA_PATH or path.startswith(SCHEMA_PATH + "/"):
            return
        if enabled:
            connection.scope["user"] = await principal_of(connection, handler, api_keys, signer)
        else:
            # No query string, no token: the common case skips parsing one.
            token = connection.query_params.get("token") if connection.scope.get("query_string") else None
            connection.scope["user"] = (
                OPEN if token is None else await token_principal(connection, handler, token, signer)
            )

    return guard


class GuardedInPlace(HTTPRouteHandler):
    """A route handler (`@GuardedInPlace(path, http_method=...)`) whose guards get the handler itself.

    Litestar hands every guard a shallow copy of the handler, so that a guard cannot change
    it; `access_guard` only reads its `opt`, and the copy (every attribute of a handler, on
    every request) was a visible share of a small request's CPU in py-spy. The hot routes
    (`POST /jobs`, `GET /jobs/{id}`) are declared with it. A subclass of HTTPRouteHandler,
    not of `get`/`post`, whose subclasses Litestar deprecates.
    """

    _sends_as_given: bool | None = None
    _exception_handlers: ExceptionHandlersMap | None = None

    async def authorize_connection(self, connection: ASGIConnection) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)  # type: ignore[misc]  # ensure_async_callable made each async

    def resolve_exception_handlers(self) -> ExceptionHandlersMap:
        # Litestar's says it is memoized but walks every layer and builds the map anew for
        # each request (its router puts it in the request's state); the layers' handlers are
        # fixed once the app is built.
        if self._exception_handlers is None:
            self._exception_handlers = super().resolve_exception_handlers()
        return self._exception_handlers

    async def to_response(self, app: Litestar, data: Any, request: Request) -> ASGIApp:
        # A JsonAnswer goes out as it is, when nothing on the route's layers would change it
        # (headers, cookies, a background task, an after_request hook, a return DTO).
        if type(data) is JsonAnswer and self._as_given():
            return data.answer()
        return await super().to_response(app, data, request)

    def _as_given(self) -> bool:
        if self._sends_as_given is None:
            self._sends_as_given = not (
                self.resolve_response_headers()
                or self.resolve_response_cookies()
                or self.background is not None
                or any(layer.after_request for layer in self.ownership_layers)
                or self.resolve_return_dto()
            )
        return self._sends_as_given


async def principal_of(
    connection: ASGIConnection, handler: BaseRouteHandler, api_keys: ApiKeys, signer: TokenSigner
) -> Principal:
    """The principal a request's key or token stands for; NotAuthenticated if none."""
    header = connection.headers.get("authorization")
    if header:
        return key_principal(header, api_keys)
    token = connection.query_params.get("token")
    if token is None:
        raise NotAuthenticated("send an API key as `Authorization: Bearer <key>`")
    return await token_principal(connection, handler, token, signer)


def key_principal(header: str, api_keys: ApiKeys) -> Principal:
    """The principal of an `Authorization` header's API key; NotAuthenticated if it holds none."""
    scheme, _, key = header.partition(" ")
    principal = api_keys.principal(key.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise NotAuthenticated("the API key is not valid: send `Authorization: Bearer <key>`")
    return principal


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


class SocketAccess:
    """Who a WebSocket acts for: its API key header, or a read-only token (job or feed) as `?token=`.

    Either kind of token is accepted: the socket lets each subscription through only as
    far as its principal covers (app/api/ws_session.py). Open (access control off), a
    socket without credentials acts as the open principal; a presented token is still
    checked, as on HTTP.
    """

    def __init__(self, api_keys: ApiKeys, enabled: bool, signer: TokenSigner) -> None:
        self.api_keys = api_keys
        self.enabled = enabled
        self.signer = signer

    async def principal(self, connection: ASGIConnection) -> tuple[Principal, int | None]:
        """The socket's principal and its token's expiry (epoch s; None for a key); NotAuthenticated if none holds."""
        header = connection.headers.get("authorization")
        if self.enabled and header:
            return key_principal(header, self.api_keys), None
        token = connection.query_params.get("token")
        if token is not None:
            try:
                return await self.signer.verify_expiring(token)
            except TokenRejected as exc:
                raise NotAuthenticated(f"token rejected: {exc}") from None
        if self.enabled:
            raise NotAuthenticated("send an API key as `Authorization: Bearer <key>`, or a token as `?token=`")
        return OPEN, None

"""Signed, short-lived, read-only tokens for clients that cannot send headers (EventSource).

A token is `base64url(claims).base64url(HMAC-SHA256(claims))`. It names the tenant, one
job (or the tenant's activity feed) and an expiry; nothing is stored, so any API process
holding the signing key can check it. The key is JOBTRAIL_TOKEN_SECRET when set, else
one generated on first use and kept in Redis for every API process to share.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

import msgspec
from redis.asyncio import Redis

from app.auth import Principal
from app.keys import Keys


class TokenRejected(Exception):
    """The token is malformed, forged, expired, or not for this resource (HTTP 401)."""


class Claims(msgspec.Struct, frozen=True, array_like=True):
    tenant: str | None
    admin: bool
    job: str | None  # None: the activity feed
    exp: int  # epoch seconds


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, redis: Redis, keys: Keys, secret: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self._secret = secret.encode() if secret else None

    async def _key(self) -> bytes:
        if self._secret is None:
            # SET NX: the first process to need a key makes it; the others read that one.
            await self.redis.set(self.keys.token_secret(), secrets.token_hex(32), nx=True)
            self._secret = (await self.redis.get(self.keys.token_secret())).encode()
        return self._secret

    async def issue(self, principal: Principal, job: str | None, ttl_s: int) -> tuple[str, int]:
        """A token for `job` (None: the principal's activity feed) and its expiry (epoch s)."""
        exp = int(time.time()) + ttl_s
        body = msgspec.json.encode(Claims(principal.tenant, principal.admin, job, exp))
        signature = hmac.new(await self._key(), body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(signature)}", exp

    async def verify(self, token: str) -> Principal:
        """The read-only principal a token stands for; TokenRejected if it does not hold."""
        head, _, tail = token.partition(".")
        try:
            body, signature = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            raise TokenRejected("malformed token") from None
        expected = hmac.new(await self._key(), body, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise TokenRejected("token signature does not match")
        claims = msgspec.json.decode(body, type=Claims)
        if claims.exp <= time.time():
            raise TokenRejected("token has expired; ask for a new one")
        return Principal(tenant=claims.tenant, admin=claims.admin, job=claims.job, feed=claims.job is None)

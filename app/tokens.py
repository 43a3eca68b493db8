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
import re
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


# The one spelling `_b64` writes: the URL-safe alphabet, no padding.
_B64URL = re.compile(r"^[A-Za-z0-9_-]+\Z")


def _unb64(text: str) -> bytes:
    """The bytes `text` spells, only if `_b64` spells them so: ValueError for any other spelling.

    Python's decoder drops characters outside the alphabet, accepts padding and ignores
    the unused low bits of the last character, so many strings decode to one token's
    bytes; re-encoding and comparing leaves exactly one.
    """
    if not _B64URL.match(text):
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:
        raise ValueError("not the canonical spelling")
    return raw


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
        head, dot, tail = token.partition(".")
        try:
            if not dot:
                raise ValueError("no signature")
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

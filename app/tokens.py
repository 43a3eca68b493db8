"""Signed, short-lived, read-only tokens for clients that cannot send headers (EventSource).

A token is `base64url(claims).base64url(HMAC-SHA256(claims))`. It names the tenant, one
job (or the tenant's activity feed) and an expiry; nothing is stored, so any API process
holding the signing key can check it. The key is derived from the server secret
(app/secret.py): JOBTRAIL_TOKEN_SECRET when set, else one kept in Redis for every API
process to share. A signature that does not hold makes the signer re-read that secret
(rate-bounded) and check once more, so after Redis lost its data the processes agree on
the new secret again without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

import msgspec
from redis.asyncio import Redis

from jobtrail.auth import Principal
from jobtrail.keys import Keys
from jobtrail.secret import ServerSecret


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
    def __init__(self, redis: Redis, keys: Keys, secret: str) -> None:
        self.secret = ServerSecret(redis, keys, secret)

    async def _signs(self, body: bytes, signature: bytes) -> bool:
        """Whether `signature` is ours for `body`; on a mismatch, once more with the secret re-read."""
        expected = hmac.new(await self.secret.key("tokens"), body, hashlib.sha256).digest()
        if hmac.compare_digest(signature, expected):
            return True
        # Perhaps another process holds a newer secret (Redis lost the old one): take it.
        if not await self.secret.reread():
            return False
        expected = hmac.new(await self.secret.key("tokens"), body, hashlib.sha256).digest()
        return hmac.compare_digest(signature, expected)

    async def issue(self, principal: Principal, job: str | None, ttl_s: int) -> tuple[str, int]:
        """A token for `job` (None: the principal's activity feed) and its expiry (epoch s)."""
        exp = int(time.time()) + ttl_s
        body = msgspec.json.encode(Claims(principal.tenant, principal.admin, job, exp))
        signature = hmac.new(await self.secret.key("tokens"), body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(signature)}", exp

    async def verify(self, token: str) -> Principal:
        """The read-only principal a token stands for; TokenRejected if it does not hold."""
        principal, _ = await self.verify_expiring(token)
        return principal

    async def verify_expiring(self, token: str) -> tuple[Principal, int]:
        """The read-only principal a token stands for and its expiry (epoch s); TokenRejected if it does not hold.

        For a connection that outlives a request (a WebSocket): it must end at the expiry.
        """
        head, dot, tail = token.partition(".")
        try:
            if not dot:
                raise ValueError("no signature")
            body, signature = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            raise TokenRejected("malformed token") from None
        if not await self._signs(body, signature):
            raise TokenRejected("token signature does not match")
        claims = msgspec.json.decode(body, type=Claims)
        if claims.exp <= time.time():
            raise TokenRejected("token has expired; ask for a new one")
        return Principal(tenant=claims.tenant, admin=claims.admin, job=claims.job, feed=claims.job is None), claims.exp

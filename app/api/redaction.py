"""Secrets kept out of the access log and error bodies.

Credentials reach the server in URLs: `?token=` by design, an API key sent by mistake
as `?api_key=`, a key pasted into any parameter or path. What reads a URL back (the
access log, an error detail that names the request) passes it through here.

A query parameter's value is redacted when its name, percent-decoded and lower-cased,
names a secret (`SECRET_NAMES`, or any name holding `token`, `secret`, `password`…),
so `?%74oken=` is redacted like `?token=`; and any text, whatever its parameter, loses
whatever has the shape of a jobtrail key (`jt_` + base64url, app/auth.py) or of a
read-only token (base64url claims `.` a 43-character signature, app/tokens.py).
Redacting by parsed name and by shape, never by matching the raw text `token=`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

REDACTED = "[redacted]"

SECRET_NAMES = frozenset({
    "key", "apikey", "authorization", "auth", "bearer", "sig", "signature", "pwd", "pass", "session", "sid",
    "jwt", "credential", "credentials",
})
_SECRET_PARTS = ("token", "secret", "password", "passwd", "apikey", "accesskey", "privatekey", "auth", "credential")

_KEY = r"jt_[A-Za-z0-9_-]{16,}"  # app/auth.py new_key: "jt_" + token_urlsafe(32), 43 characters
# claims.signature (HMAC-SHA256). Tried only where a run of base64url starts, and
# possessively: a long run without a dot costs one pass, not one per character.
_TOKEN = r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"  # noqa: S105 - a pattern
_SECRET_SHAPE = re.compile(f"{_KEY}|{_TOKEN}")


def is_secret_name(name: str) -> bool:
    """Whether a (decoded) parameter name names a credential: token, api_key, X-Api-Key, password…"""
    folded = re.sub(r"[^a-z]", "", name.lower())
    return folded in SECRET_NAMES or folded.endswith("key") or any(part in folded for part in _SECRET_PARTS)


def redacted_text(text: str) -> str:
    """`text` with anything shaped like a jobtrail key or token replaced, percent-encoded ones too."""
    text = _SECRET_SHAPE.sub(REDACTED, text)
    if "%" in text or "+" in text:
        # A key sent as `jt%5F…` is the same key; decode the pieces that hide one.
        text = re.sub(r"[^&?=/\s]+", lambda m: REDACTED if _SECRET_SHAPE.search(unquote_plus(m[0])) else m[0], text)
    return text


def redacted_query(query: str) -> str:
    """A raw query string with the value of every secret-named parameter, and every secret shape, redacted."""
    pieces = []
    for piece in query.split("&"):
        name, eq, value = piece.partition("=")
        if eq and is_secret_name(unquote_plus(name)):
            value = REDACTED
        pieces.append(redacted_text(name) + eq + redacted_text(value))
    return "&".join(pieces)


def redacted_target(path: str, query: str) -> str:
    """A request's path and query as they may be logged or echoed."""
    return redacted_text(path) + (f"?{redacted_query(query)}" if query else "")

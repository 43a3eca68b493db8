"""API keys and the principals they stand for.

Keys are configured hashed (`tenant:sha256-hex`, in JOBTRAIL_API_KEYS and/or the file
JOBTRAIL_API_KEYS_FILE, one per line there); the tenant `*` marks an admin key. A
presented key is hashed and compared with every configured hash in constant time, so
neither the comparison nor the number of comparisons tells a guesser anything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

import msgspec

from jobtrail.config import Settings

ADMIN = "*"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")


class ConfigError(Exception):
    """The service must not start as configured; the message says what to set."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request acts for.

    `tenant` is None for an admin and in open mode. A read-only token principal is bound
    to one job (`job`) or to its tenant's activity feed (`feed`).
    """

    tenant: str | None
    admin: bool = False
    job: str | None = None
    feed: bool = False

    @property
    def by_token(self) -> bool:
        return self.job is not None or self.feed

    def sees(self, job_tenant: str | None) -> bool:
        """Whether a job of `job_tenant` exists for this principal (else: 404, like a missing job)."""
        return self.admin or job_tenant == self.tenant

    @property
    def scope(self) -> str:
        """The name limits are counted under."""
        return self.tenant or (ADMIN if self.admin else "-")


OPEN = Principal(tenant=None, admin=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: 256 random bits, so a fast hash is enough to store it."""
    return "jt_" + secrets.token_urlsafe(32)


class ApiKeys:
    """The configured key hashes and the tenant each belongs to."""

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        self._entries = [(tenant, bytes.fromhex(digest)) for tenant, digest in entries]

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str, source: str) -> list[tuple[str, str]]:
        """`tenant:sha256-hex` entries separated by commas or newlines; `#` starts a comment."""
        entries = []
        for raw in re.split(r"[,\n]", text):
            item = raw.split("#", 1)[0].strip()
            if not item:
                continue
            tenant, _, digest = item.rpartition(":")
            digest = digest.lower()
            if not (tenant == ADMIN or TENANT_RE.match(tenant)) or not _HASH_RE.match(digest):
                # Never echo the entry: it may be a plain key pasted by mistake.
                raise ConfigError(
                    f"{source}: an entry is not `tenant:sha256-hex` (tenant: letters, digits, `_.-`, or `*` "
                    "for admin; the hash: 64 hex digits); `jobtrail keys new TENANT` prints a valid one"
                )
            entries.append((tenant, digest))
        return entries

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        entries = cls.parse(settings.api_keys, "JOBTRAIL_API_KEYS")
        if settings.api_keys_file:
            try:
                text = Path(settings.api_keys_file).read_text()
            except OSError as exc:
                raise ConfigError(
                    f"JOBTRAIL_API_KEYS_FILE: cannot read {settings.api_keys_file} ({exc.strerror})"
                ) from None
            entries += cls.parse(text, settings.api_keys_file)
        return cls(entries)

    def principal(self, key: str) -> Principal | None:
        """The principal `key` belongs to, or None."""
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for tenant, expected in self._entries:
            # No early exit: every entry is compared, whichever matches.
            if hmac.compare_digest(digest, expected):
                found = tenant
        if found is None:
            return None
        return Principal(tenant=None, admin=True) if found == ADMIN else Principal(tenant=found)


def auth_enabled(settings: Settings, keys: ApiKeys) -> bool:
    """Whether requests need a key; raises ConfigError when the service must not start.

    Embedded mode may run open; with REDIS_URL set, running open takes JOBTRAIL_AUTH=off.
    """
    if settings.auth not in ("auto", "on", "off"):
        raise ConfigError(f"JOBTRAIL_AUTH must be auto, on or off, not {settings.auth!r}")
    if settings.auth == "off":
        return False
    if len(keys):
        return True
    if settings.auth == "on" or not settings.embedded:
        raise ConfigError(
            "no API keys are configured: set JOBTRAIL_API_KEYS or JOBTRAIL_API_KEYS_FILE "
            "(`jobtrail keys new TENANT` makes one), or JOBTRAIL_AUTH=off to run without access control"
        )
    return False

"""Which Redis deployment REDIS_URL names: one server, a Sentinel-watched master, or a Cluster.

    redis://[user:password@]host[:port][/db]                 one server (redis-py's own URL)
    redis+sentinel://[user:password@]h1[:26379],h2/SERVICE[/db]   the master Sentinel names
    redis+cluster://[user:password@]h1[:6379],h2                  any nodes of a cluster

each with a `rediss` twin for TLS. For Sentinel the credentials are the data nodes' (the
master's and replicas'); the sentinels' own password, when they have one, is the separate
JOBTRAIL_SENTINEL_PASSWORD, since the two are different secrets in every managed offering.

Parsed once, when settings are read: a malformed URL stops every command before it opens a
connection, with a message that names what to fix (app/cli.py exits 2 on it).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote

import msgspec

Kind = Literal["single", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT: dict[Kind, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_FORMS = (
    "redis://host:6379/0, rediss://…, redis+sentinel://h1:26379,h2:26379/SERVICE[/db] "
    "or redis+cluster://h1:7000[,h2:7001]"
)


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """What REDIS_URL says: the kind of deployment, where to reach it and how to log in."""

    kind: Kind
    tls: bool
    # The URL as given: for one server, redis-py parses it itself (options and all).
    url: str
    hosts: tuple[tuple[str, int], ...]
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for logs and error messages."""
        return mask_password(self.url)


class TopologyError(ValueError):
    """REDIS_URL is not one of the forms jobtrail understands; the message says what is wrong."""


def parse_topology(url: str) -> Topology:
    """Parse REDIS_URL, or raise TopologyError saying what is wrong with it."""
    shown = mask_password(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise TopologyError(f"REDIS_URL {shown!r} has no scheme: use {_FORMS}")
    if scheme.lower() not in _SCHEMES:
        raise TopologyError(f"REDIS_URL {shown!r}: unknown scheme {scheme!r}; use {_FORMS}")
    kind, tls = _SCHEMES[scheme.lower()]
    if scheme.lower() == "unix":
        return Topology(kind=kind, tls=False, url=url, hosts=())
    rest, _, query = rest.partition("?")
    if query and kind != "single":
        raise TopologyError(f"REDIS_URL {shown!r}: options after `?` are only understood on redis:// and rediss://")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    hosts = tuple(_host(part, kind, shown) for part in hostlist.split(","))
    if kind == "single" and len(hosts) > 1:
        raise TopologyError(
            f"REDIS_URL {shown!r} names {len(hosts)} hosts: one server takes one; for several use "
            "redis+sentinel:// (the sentinels) or redis+cluster:// (nodes of a cluster)"
        )
    segments = [segment for segment in path.split("/") if segment] if path else []
    service, db = _path(kind, segments, shown)
    return Topology(
        kind=kind, tls=tls, url=url, hosts=hosts, service=service, db=db, username=username, password=password
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        # `redis://secret@host` is redis-py's password-only form.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _host(part: str, kind: Kind, shown: str) -> tuple[str, int]:
    if not part:
        raise TopologyError(f"REDIS_URL {shown!r}: a host is missing (an empty name before or after a comma?)")
    if part.startswith("["):  # [::1]:6379
        host, bracket, after = part[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise TopologyError(f"REDIS_URL {shown!r}: {part!r} is not [IPv6]:port")
        port_text = after[1:]
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise TopologyError(f"REDIS_URL {shown!r}: {part!r} has no host name")
    if not port_text:
        return host, _DEFAULT_PORT[kind]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TopologyError(f"REDIS_URL {shown!r}: port {port_text!r} of {host!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _path(kind: Kind, segments: list[str], shown: str) -> tuple[str, int]:
    """(service, db) from the path: `/db`, `/SERVICE[/db]` for Sentinel, nothing for Cluster."""
    if kind == "cluster":
        if segments:
            raise TopologyError(
                f"REDIS_URL {shown!r}: a cluster has only database 0, so its URL has no path "
                f"(drop {'/'.join(segments)!r})"
            )
        return "", 0
    if kind == "sentinel":
        if not segments:
            raise TopologyError(
                f"REDIS_URL {shown!r} names no service: Sentinel needs the master's name, e.g. "
                "redis+sentinel://h1:26379,h2:26379/mymaster"
            )
        service, *rest = segments
        if len(rest) > 1:
            raise TopologyError(f"REDIS_URL {shown!r}: the path is /SERVICE[/db], not {'/'.join(segments)!r}")
        return unquote(service), _db(rest[0] if rest else "0", shown)
    if len(segments) > 1:
        raise TopologyError(f"REDIS_URL {shown!r}: the path is /db, not {'/'.join(segments)!r}")
    return "", _db(segments[0] if segments else "0", shown)


def _db(text: str, shown: str) -> int:
    if not text.isdigit():
        raise TopologyError(f"REDIS_URL {shown!r}: database {text!r} is not a number (0, 1, …)")
    return int(text)


def mask_password(url: str) -> str:
    """`redis://user:***@host` for `redis://user:secret@host`; a URL without a password unchanged."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:***" if colon else "***"
    return f"{scheme}://{masked}@{hostlist}{slash}{path}"

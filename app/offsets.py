"""Stream entry ids (`1700000000000-0`): parsing client offsets and comparing ids."""

from __future__ import annotations

import re

from jobtrail.errors import InvalidRequest

# ASCII digits only: `\d` would also take Unicode ones (`١٢٣`), which Redis does not.
_ID_RE = re.compile(r"^([0-9]{1,20})(?:-([0-9]{1,20}))?$")
_U64 = 2**64 - 1
BEGINNING = "0-0"


def parse_offset(raw: str) -> str:
    """A client's offset as a full entry id; InvalidRequest when it is not one.

    `1700000000000` alone means `1700000000000-0`, as in XRANGE.
    """
    match = _ID_RE.match(raw.strip())
    if not match:
        raise InvalidRequest(f"malformed event id {raw!r}: expected '<ms>-<seq>', e.g. 1700000000000-0")
    ms, seq = int(match[1]), int(match[2] or 0)
    # The greatest id is out of range too: nothing comes after it, and Redis refuses it
    # as the exclusive start `(<id>` that history and SSE replay pass to XRANGE.
    if ms > _U64 or seq > _U64 or (ms, seq) == (_U64, _U64):
        raise InvalidRequest(f"event id {raw!r} is out of range")
    return f"{ms}-{seq}"


def id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of an entry id: ids compare as (ms, seq) pairs, not as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_after(entry_id: str, offset: str) -> bool:
    """True when `entry_id` comes strictly after `offset` in a stream."""
    return id_key(entry_id) > id_key(offset)


def previous_id(entry_id: str) -> str:
    """The greatest entry id strictly before `entry_id` (`0-0` stays `0-0`)."""
    ms, seq = id_key(entry_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_U64}" if ms else BEGINNING

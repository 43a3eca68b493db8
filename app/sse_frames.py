"""An event's SSE block, built from its Event, or straight from its stream entry for a replay.

A replay of 100,000 events spent most of the API's CPU turning each entry into an Event
(its data dict unpacked from the compact layout, app/events.py), then that Event into an
EventOut-shaped Struct and its JSON. `frame_of_entry` goes from the entry's fields to the
block's bytes: the data's values are decoded once, straight into a per-type Struct whose
fields are the data Struct's in its order (so it encodes as the dict `unpack_data` would
make), and the rest of the block, whose parts need no JSON escaping (a stream id, a type
name, a time, an integer), is spliced around that one encoding. The bytes are the Event
path's (`sse_event`), which tests hold equal over every type and odd values; an entry this
path does not take (the old layout, an `at` outside the cached range, anything corrupt)
goes the Event way, so what it makes, or refuses, is exactly what it did.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from jobtrail.eventlog import Unreadable, readable_entries
from jobtrail.events import (
    DATA_TYPES,
    RULES,
    TERMINAL_STATES,
    TYPE_CODES,
    Event,
    EventType,
    ms_to_datetime,
)
from jobtrail.replay_pages import RawEntry, entry_fields

_encode = msgspec.json.Encoder().encode
_decode_values = msgspec.json.Decoder(list[Any]).decode


class _EventData(msgspec.Struct, frozen=True):
    """EventOut's fields in its order, `at` already as the text msgspec writes for its datetime."""

    id: str
    type: str
    at: str | datetime
    attempt: int
    data: dict[str, Any]


# Where `ms / 1000` (what ms_to_datetime divides) still rounds to the exact millisecond: below
# 2**32 s a double resolves well under half a microsecond; later (and before 1970) the slow way.
_EXACT_UNTIL_MS = 2**32 * 1000
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 4096


def _second_text(second: int) -> str:
    head = _SECONDS.get(second)
    if head is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        head = _SECONDS[second] = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return head


_SECOND_BYTES: dict[int, bytes] = {}


def _second_bytes(second: int) -> bytes:
    """`_second_text` as bytes, for a frame spliced together as bytes."""
    head = _SECOND_BYTES.get(second)
    if head is None:
        if len(_SECOND_BYTES) >= _SECONDS_KEPT:
            _SECOND_BYTES.clear()
        head = _SECOND_BYTES[second] = _second_text(second).encode()
    return head


def event_time(ms: int) -> str | datetime:
    """An event's `at` as SSE writes it: the same text as msgspec's for ms_to_datetime(ms), built cheaply.

    A replay of 100,000 events makes as many datetimes otherwise; their seconds repeat, so
    the text of each second is kept and only the milliseconds are formatted.
    """
    if not 0 <= ms < _EXACT_UNTIL_MS:
        return ms_to_datetime(ms)
    second, milli = divmod(ms, 1000)
    head = _second_text(second)
    return f"{head}.{milli:03d}000Z" if milli else f"{head}Z"


def sse_event(event: Event) -> bytes:
    data = _EventData(event.id, event.type, event_time(event.at), event.attempt, event.data)
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.type.encode(), _encode(data))


class Framed(msgspec.Struct, frozen=True, gc=False):
    """A replayed event as its SSE block already: what the follow needs of it (id, type), and the bytes."""

    id: str
    type: EventType
    frame: bytes

    @property
    def terminal(self) -> bool:
        return self.type in _TERMINAL_TYPES


_TERMINAL_TYPES = frozenset(t for t, rule in RULES.items() if rule.next_state in TERMINAL_STATES)


def _data_struct(event_type: EventType) -> type[msgspec.Struct]:
    """A Struct that encodes as `unpack_data`'s dict of `event_type`: its fields in order, None left out as there.

    Typed Any, as the dict's values are: nothing is validated here that the Event path does not.
    """
    struct = DATA_TYPES[event_type]
    names = struct.__struct_fields__
    if struct.__struct_config__.omit_defaults:
        # unpack_data drops every None of such a type, and a field past the stored values.
        return msgspec.defstruct(
            f"Framed{struct.__name__}", [(name, Any, None) for name in names], omit_defaults=True, gc=False)
    return msgspec.defstruct(f"Framed{struct.__name__}", [(name, Any) for name in names], gc=False)


class _Layout(msgspec.Struct, frozen=True):
    """What a type code stands for in a frame: its type, its data's Struct, and the frame's text around the id."""

    event_type: EventType
    data: type[msgspec.Struct]
    fields: int
    omits: bool
    after_id: bytes  # from the `id:` line's id to the JSON's
    after_json_id: bytes  # from the JSON's id to the time


def _layout(event_type: EventType) -> _Layout:
    name, config = event_type.value.encode(), DATA_TYPES[event_type].__struct_config__
    return _Layout(event_type, _data_struct(event_type), len(DATA_TYPES[event_type].__struct_fields__),
                   config.omit_defaults, b'\nevent: %s\ndata: {"id":"' % name, b'","type":"%s","at":"' % name)


_LAYOUTS = {code: _layout(event_type) for event_type, code in TYPE_CODES.items()}
# A frame is the join of: b"id: ", id, after_id, id, after_json_id, the second's text,
# _AFTER_SECOND[milliseconds], the attempt (_attempt_text), the data's JSON, _END.
_AFTER_SECOND = tuple([b'Z","attempt":'] + [b'.%03d000Z","attempt":' % milli for milli in range(1, 1000)])
_END = b"}\n\n"


def _attempt_text(attempt: int) -> bytes:
    return b'%d,"data":' % attempt


def frame_of_entry(entry_id: str, e: str, d: str) -> Framed | None:
    """The SSE block of a compact entry (fields `e`, `d`, and a `k`), or None when only the Event path may build it.

    The checks of Event.from_entry, so that None comes for every entry this path cannot
    vouch for, and for any that would fail on the way (the caller then takes the Event
    path, which decodes, refuses or fails as it did); never an exception.
    """
    try:
        return _frame(entry_id, e, d)
    except (KeyError, TypeError, ValueError, OverflowError, OSError, RecursionError):
        return None


# `e` values seen, and what they say: a job's entries share a handful (`103`: progress of
# attempt 1), and reading one is most of an entry's checks. Only those without an `at` of
# their own are kept, which would make each entry's `e` a new one.
_METAS: dict[str, tuple[bytes, _Layout]] = {}
_METAS_KEPT = 1024


def _meta(e: str) -> tuple[bytes, _Layout, int | None] | None:
    """The attempt's text, the type's layout and the explicit `at` (None: the id's) of an `e` field; None if none."""
    hit = _METAS.get(e)
    if hit is not None:
        return hit[0], hit[1], None
    meta, _, at_text = e.partition(" ")
    if not (meta.isascii() and meta.isdigit()):
        return None
    attempt, code = divmod(int(meta), 100)
    layout = _LAYOUTS.get(code)
    if layout is None:
        return None
    if at_text:
        return _attempt_text(attempt), layout, int(at_text)
    if len(_METAS) >= _METAS_KEPT:
        _METAS.clear()
    hit = _METAS[e] = (_attempt_text(attempt), layout)
    return hit[0], layout, None


def _frame(entry_id: str, e: str, d: str) -> Framed | None:
    meta = _meta(e)
    if meta is None:
        return None
    attempt, layout, at = meta
    ms, dash, seq = entry_id.partition("-")
    # Spliced into JSON unescaped: only an id of digits around its dash, as Redis writes them all.
    if not (dash and entry_id.isascii() and ms.isdigit() and seq.isdigit()):
        return None
    if at is None:
        at = int(ms)
    if not 0 <= at < _EXACT_UNTIL_MS:
        return None
    values = _decode_values(f"[{d}]")
    # More values than fields is corrupt; fewer make the dict short, which only a Struct whose
    # every field may be left out can say.
    if len(values) > layout.fields or (len(values) < layout.fields and not layout.omits):
        return None
    data = _encode(layout.data(*values))
    second, milli = divmod(at, 1000)
    ident = entry_id.encode()
    frame = b"".join((b"id: ", ident, layout.after_id, ident, layout.after_json_id, _second_bytes(second),
                      _AFTER_SECOND[milli], attempt, data, _END))
    return Framed(entry_id, layout.event_type, frame)


# A replay page's item: an SSE block already, or an Event (or Unreadable) for its transport to encode.
Replayed = Framed | Event | Unreadable


def sse_frames(entries: list[RawEntry]) -> list[Replayed]:
    """A replay page's items: each entry's SSE block, or, for one only the Event path reads, its Event or Unreadable."""
    items: list[Replayed] = []
    for entry_id, fields in entries:
        framed = None
        # Exactly the compact layout (e, d, k); a Cluster client's reply is a dict.
        if type(fields) is list:
            if len(fields) == 6 and fields[0] == "e" and fields[2] == "d" and fields[4] == "k":
                framed = frame_of_entry(entry_id, fields[1], fields[3])
        elif len(fields) == 3 and "e" in fields and "d" in fields and "k" in fields:
            framed = frame_of_entry(entry_id, fields["e"], fields["d"])  # type: ignore[call-overload]
        if framed is None:
            items += readable_entries([(entry_id, entry_fields(fields))])
        else:
            items.append(framed)
    return items

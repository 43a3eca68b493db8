"""Properties: whatever a client or a stream hands us decodes to a value or to a typed error, never a crash.

Three decoders take input jobtrail did not produce itself:
- `parse_offset`: the SSE Last-Event-ID header and the `after` query parameters;
- `Event.from_entry`: a stream entry, which a bug or a hand edit may have corrupted;
- `Cursor.decode`: the `cursor` query parameter of the job listing.

No Redis is needed: the rules Redis applies to ids are written out below.
"""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobtrail.api.common import requested_offset
from jobtrail.errors import InvalidRequest
from jobtrail.eventlog import decode_events
from jobtrail.events import CorruptEvent, Event, EventType
from jobtrail.index import Cursor
from jobtrail.offsets import BEGINNING, id_key, is_after, parse_offset, previous_id
from jobtrail.sse import sse_event
from tests.support.entries import DEEP, U64, corrupt_entries, id_parts, ids, json_values, stable, stored_entries, u64

MAX_ID = f"{U64}-{U64}"
# Redis writes ids in decimal without leading zeros; so must every id we hand it.
CANONICAL_ID = re.compile(r"(0|[1-9][0-9]*)-(0|[1-9][0-9]*)")


def successor(ms: int, seq: int) -> tuple[int, int]:
    """The next id after (ms, seq), as Redis orders them."""
    return (ms, seq + 1) if seq < U64 else (ms + 1, 0)


# --- 1. client offsets -------------------------------------------------------

# Text that looks like an id but is not quite one: signs, extra dashes, spaces,
# numbers past 2^64, non-ASCII digits.
near_miss_pieces = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(U64 - 2, U64 + 2).map(str),
    st.sampled_from(["-", "-", "+", " ", "\t", "\n", "0", "00", "_", ".", "e", "x", "١٢٣", "１", "²"]),  # noqa: RUF001 - non-ASCII digits on purpose
    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=3),
)
near_miss_ids = st.lists(near_miss_pieces, max_size=5).map("".join)
offsets = st.text() | near_miss_ids | ids.map("{0[0]}-{0[1]}".format)

NEAR_MISSES = [
    "", " ", "-", "1-", "-1", "+1", "1-+2", "1-2-3", "1--2", "1 -2", "1.5", "0x10", "1e3", "1_000",
    "١٢٣", "１２３-４", "1-٢",  # noqa: RUF001 - Unicode digits: Redis reads only ASCII ones
    f"{U64 + 1}", f"{U64 + 1}-0", f"0-{U64 + 1}", f"{10**30}-0", "1" * 21,
    MAX_ID,  # a valid id, but XRANGE refuses "(" + it: nothing can come after it
]


@stable
@given(raw=offsets)
@example(raw="١٢٣")
@example(raw=MAX_ID)
@example(raw=f"{U64}")
@example(raw=" 1-2\n")
def test_parse_offset_returns_a_canonical_id_or_invalid_request(raw):
    try:
        parsed = parse_offset(raw)
    except InvalidRequest:
        return
    assert CANONICAL_ID.fullmatch(parsed), parsed
    ms, seq = id_key(parsed)
    # What Redis accepts as the exclusive start `(<id>` of XRANGE, where the API uses it:
    # both parts u64 ("Invalid stream ID"), and an id after it ("invalid start ID").
    assert ms <= U64 and seq <= U64
    assert parsed != MAX_ID
    assert parse_offset(parsed) == parsed


@pytest.mark.parametrize("raw", NEAR_MISSES)
def test_parse_offset_refuses_near_misses_with_invalid_request(raw):
    with pytest.raises(InvalidRequest):
        parse_offset(raw)


@stable
@given(ms=u64, seq=u64)
def test_parse_offset_round_trips_every_id_redis_accepts_after(ms, seq):
    if (ms, seq) == (U64, U64):
        return  # refused: see NEAR_MISSES
    assert parse_offset(f"{ms}-{seq}") == f"{ms}-{seq}"


@stable
@given(ms=u64)
def test_a_bare_ms_offset_means_its_first_sequence_number(ms):
    # As in XRANGE: `1700000000000` is `1700000000000-0`.
    assert parse_offset(str(ms)) == f"{ms}-0"


@stable
@given(header=st.none() | offsets, after=st.none() | offsets, last_event_id=st.none() | offsets)
def test_requested_offset_is_the_first_offset_given_parsed_or_invalid_request(header, after, last_event_id):
    request = SimpleNamespace(headers={"last-event-id": header} if header is not None else {})
    raw = header or after or last_event_id
    try:
        offset, resuming = requested_offset(request, after, last_event_id)
    except InvalidRequest:
        assert raw
        with pytest.raises(InvalidRequest):
            parse_offset(raw)
        return
    assert (offset, resuming) == ((parse_offset(raw), True) if raw else (BEGINNING, False))


@stable
@given(a=ids, b=ids)
def test_is_after_orders_ids_as_ms_seq_pairs(a, b):
    assert is_after(f"{a[0]}-{a[1]}", f"{b[0]}-{b[1]}") == (a > b)
    assert id_key(f"{a[0]}-{a[1]}") == a


@stable
@given(a=ids, ms=id_parts)
def test_a_bare_ms_id_compares_as_its_first_sequence_number(a, ms):
    assert is_after(f"{a[0]}-{a[1]}", str(ms)) == (a > (ms, 0))
    assert is_after(str(ms), f"{a[0]}-{a[1]}") == ((ms, 0) > a)


@stable
@given(x=ids, y=ids)
@example(x=(0, 1), y=(0, 0))
@example(x=(1, 0), y=(0, U64))
@example(x=(U64, U64), y=(U64, U64 - 1))
def test_previous_id_is_the_greatest_id_strictly_before(x, y):
    entry_id = f"{x[0]}-{x[1]}"
    if x == (0, 0):
        assert previous_id(entry_id) == BEGINNING
        return
    before = previous_id(entry_id)
    assert CANONICAL_ID.fullmatch(before), before
    assert is_after(entry_id, before)
    assert successor(*id_key(before)) == x
    other = f"{y[0]}-{y[1]}"
    assert not (is_after(other, before) and is_after(entry_id, other)), "an id between"


# --- 2. stream entries -------------------------------------------------------



@stable
@given(entry=stored_entries())
def test_every_entry_the_append_script_writes_decodes_to_its_event(entry):
    entry_id, fields, event = entry
    decoded = Event.from_entry(entry_id, fields)
    assert decoded == event
    assert decode_events([(entry_id, fields)]) == [event]
    sse_event(decoded)  # and every reader can send it


# What the readers of a stream expect of a corrupt entry: the hub catches it (closing
# that stream's subscriptions, `except Exception`), a request answers a logged 500, a
# worker fails the job. CorruptEvent is a ValueError, as `from_entry` documents; an
# entry that decodes must be one every reader can use.
@stable
@given(entry=corrupt_entries())
@example(entry=("1-0", {}))  # was KeyError
@example(entry=("1-0", {"type": "log", "at": "1", "attempt": "0", "data": "[1]"}))  # was accepted, data a list
@example(entry=("1-0", {"type": "log", "at": "1", "attempt": "0", "data": '{"a":' + DEEP + "}"}))  # RecursionError
@example(entry=("1-0", {"type": "log", "at": str(10**30), "attempt": "0", "data": "{}"}))  # OverflowError in out()
@example(entry=("1-0", {"type": "log", "at": str(-(10**15)), "attempt": "0", "data": "{}"}))  # ValueError in out()
@example(entry=("1-0", {"e": "105", "d": '"info","a",3', "k": ""}))  # more values than a log has fields
@example(entry=("1-0", {"e": "105", "d": '"info"', "k": ""}))  # fewer: as if a field were added since
@example(entry=("1-0", {"e": "199", "d": "", "k": ""}))  # no such type
@example(entry=("1-0", {"e": "-97", "d": "", "k": ""}))  # no attempt is negative
@example(entry=("1-0", {"e": "105 x", "d": '"info","a"', "k": ""}))  # an `at` that is no number
@example(entry=("1-0", {"e": "103", "d": "0.5]+[1", "k": ""}))  # brackets of its own
def test_a_corrupt_entry_decodes_to_an_event_or_corrupt_event(entry):
    entry_id, fields = entry
    try:
        event = Event.from_entry(entry_id, fields)
    except CorruptEvent:
        with pytest.raises(CorruptEvent):
            decode_events([(entry_id, fields)])
        return
    assert isinstance(event.type, EventType)
    assert isinstance(event.data, dict)
    assert isinstance(event.at, int) and isinstance(event.attempt, int)
    assert isinstance(event.terminal, bool)
    sse_event(event)


# SSE writes an event's `at` through a cache of seconds (app/sse_frames.py, event_time): the bytes
# must be those of the event's own wire form, EventOut with its datetime, for every `at`
# an entry can hold, around the edges of the fast range too.
@stable
@given(at=st.integers(-62135596800000, 253402300799999) | st.integers(0, 2**32 * 1000 + 1000)
       | st.sampled_from([0, 999, 1000, 2**32 * 1000 - 1, 2**32 * 1000, -1]))
def test_an_sse_frame_is_the_event_out_encoded_whatever_its_time(at):
    event = Event(id="1-0", type=EventType.LOG, at=at, attempt=1, data={"message": "é\n", "n": [1.5, None]})
    out = msgspec.json.encode(event.out())
    assert sse_event(event) == b"id: 1-0\nevent: log\ndata: %s\n\n" % out


def test_corrupt_event_is_the_value_error_from_entry_documents():
    assert issubclass(CorruptEvent, ValueError)


# --- 3. listing cursors ------------------------------------------------------

def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


cursor_texts = st.one_of(
    st.text(),
    st.binary(max_size=40).map(b64),
    json_values.map(lambda v: b64(msgspec.json.encode(v))),
    st.tuples(json_values, json_values).map(lambda v: b64(msgspec.json.encode(list(v)))),
    st.integers(1, 5000).map(lambda n: b64(b"[" + b"9" * n + b', "job"]')),
)


@stable
@given(raw=cursor_texts)
@example(raw="")
@example(raw="é")
@example(raw="====")
@example(raw=b64(b'[1, "a", 3]'))
def test_cursor_decode_returns_a_cursor_or_invalid_request(raw):
    try:
        cursor = Cursor.decode(raw)
    except InvalidRequest:
        return
    assert isinstance(cursor.score, int) and not isinstance(cursor.score, bool)
    assert isinstance(cursor.job_id, str)
    str(cursor.score)  # how redis-py sends it to ZCOUNT / ZREVRANGEBYSCORE


@stable
@given(score=st.integers(-(2**63), U64), job_id=st.text())
def test_cursor_encode_round_trips(score, job_id):
    encoded = Cursor(score, job_id).encode()
    assert re.fullmatch(r"[A-Za-z0-9_-]*", encoded), "URL-safe, no padding"
    assert Cursor.decode(encoded) == Cursor(score, job_id)

"""Stream entries as the append script writes them, and as a bug or a hand edit could leave them.

Hypothesis strategies.

Shared by the decoding properties (tests/test_decoding_properties.py) and the replay's
framing (tests/test_sse_frames.py), which must read every one of them alike.
"""

from __future__ import annotations

import msgspec
from hypothesis import settings
from hypothesis import strategies as st

from jobtrail.events import DATA_TYPES, SCHEMA_VERSION, TYPE_CODES, Event, EventType, pack_data

U64 = 2**64 - 1

# Derandomized: the same examples on every run, so CI cannot flake; small enough that
# the whole file takes a few seconds.
stable = settings(max_examples=300, derandomize=True, deadline=None)

u64 = st.integers(0, U64)
# Small values too, so that ids share their `ms` (and sit at seq 0 or U64) often.
id_parts = st.integers(0, 3) | st.sampled_from([U64 - 1, U64]) | u64
ids = st.tuples(id_parts, id_parts)


text = st.text(max_size=10)
json_values = st.recursive(
    # Finite floats: JSON has no infinity (msgspec writes it as null).
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(text, json_values, max_size=4)
# Every `at` a datetime can show (years 1 to 9999), in epoch ms.
AT_RANGE = (-62_135_596_800_000, 253_402_300_799_999)


@st.composite
def laid_out_data(draw, event_type):
    """Data with the keys of the type's Struct, as check_data makes it: all the compact layout stores."""
    struct = DATA_TYPES[event_type]
    names = struct.__struct_fields__
    if not struct.__struct_config__.omit_defaults:
        return {name: draw(json_values) for name in names}
    present = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    return {name: draw(json_values.filter(lambda v: v is not None)) for name in names if name in present}


@st.composite
def stored_entries(draw):
    """(entry id, fields as XRANGE returns them, the event they hold), in either layout append.lua wrote."""
    event_type = draw(st.sampled_from(EventType))
    compact = draw(st.booleans())
    at = draw(st.integers(*AT_RANGE))
    entry_id = "{}-{}".format(*draw(ids))
    # The compact layout leaves `at` out when it is the id's milliseconds (the server's clock).
    at_is_id = compact and at >= 0 and draw(st.booleans())
    if at_is_id:
        entry_id = f"{at}-{draw(id_parts)}"
    event = Event(
        id=entry_id,
        type=event_type,
        at=at,
        attempt=draw(st.integers(0, 2**32)),
        data=draw(laid_out_data(event_type)) if compact else draw(json_objects),
        key=draw(st.none() | st.text(min_size=1, max_size=20)),
    )
    if compact:
        # redis.call('XADD', stream, '*', 'e', attempt * 100 + code [.. ' ' .. at], 'd', data, 'k', key)
        meta = str(event.attempt * 100 + TYPE_CODES[event.type])
        return (
            event.id,
            {
                "e": meta if at_is_id else f"{meta} {event.at}",
                "d": pack_data(event.type, event.data),
                "k": event.key or "",
            },
            event,
        )
    # The layout before: {'type', etype, 'at', at, 'v', '1', 'attempt', attempt, 'data', data} (+ 'key', key)
    fields = {
        "type": event.type.value,
        "at": str(event.at),
        "v": str(SCHEMA_VERSION),
        "attempt": str(event.attempt),
        "data": msgspec.json.encode(event.data).decode(),
    }
    if event.key is not None:
        fields["key"] = event.key
    return event.id, fields, event


DEEP = "[" * 100_000 + "]" * 100_000
# Per field, the values most likely to get past a naive decoder (and any text, in ODD).
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),  # past the datetime range, past u64
    st.sampled_from(
        [
            "",
            " ",
            " 7 ",
            "nan",
            "inf",
            "1e3",
            "1.5",
            "0x10",
            "-1",
            "+1",
            "1_0",
            "٣",
            "9" * 5000,
            str(AT_RANGE[0] - 1),
            str(AT_RANGE[1] + 1),
        ]
    ),
)
json_texts = st.one_of(
    json_values.map(lambda v: msgspec.json.encode(v).decode()),  # valid JSON, mostly not an object
    json_objects.map(lambda v: msgspec.json.encode(v).decode()[:-1]),  # truncated
    st.sampled_from(
        [
            "",
            "null",
            "[]",
            "[1]",
            '"s"',
            "1",
            "true",
            "{",
            '{"a":',
            "{'a': 1}",
            '{"a": NaN}',
            '{"a": 1e400}',
            "\ud800",
            '{"a": "\\ud800"}',
        ]
    ),
    st.sampled_from([DEEP, '{"a":' + DEEP + "}", '{"a": {"b": ' + DEEP + "}}"]),  # nested past any stack
)
type_names = st.sampled_from(["SUBMITTED", " log", "Log", "unknown", "progress\x00", "", *EventType])
ODD = {
    name: values | st.text(max_size=12)
    for name, values in {
        "type": type_names,
        "at": numbers,
        "v": numbers,
        "attempt": numbers,
        "data": json_texts,
        "key": text,
        "e": numbers | st.tuples(numbers, numbers).map(" ".join),
        "d": json_texts,
        "k": text,
    }.items()
}
FIELD_NAMES = list(ODD)
odd_values = st.one_of(*ODD.values())


@st.composite
def corrupt_entries(draw):
    """Entries a bug or a hand edit could leave: fields dropped, changed, added, or made up."""
    if draw(st.booleans()):
        return "1-0", draw(st.dictionaries(st.sampled_from(FIELD_NAMES) | text, odd_values, max_size=7))
    entry_id, fields, _ = draw(stored_entries())
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=3)):
        if draw(st.booleans()):
            fields.pop(name, None)
        else:
            fields[name] = draw(ODD[name])
    return entry_id, fields

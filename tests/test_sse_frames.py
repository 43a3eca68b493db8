"""A replayed entry's SSE block, framed straight from its fields (app/sse_frames.py), is the Event path's to the byte.

The Event path (Event.from_entry, then sse_event) is what every live event still takes and
what replays took before; the fast path must make the same bytes for every entry it takes,
take every entry the append script writes (an `at` in its range), and hand any other to the
Event path, which then decodes it, or refuses it as Unreadable, exactly as before.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from jobtrail.eventlog import EventLog, Unreadable, readable_entries, readable_raw_entries
from jobtrail.events import TYPE_CODES, Event, EventType, pack_data
from jobtrail.keys import Keys
from jobtrail.replay_pages import raw_client
from jobtrail.sse_frames import Framed, frame_of_entry, sse_event, sse_frames
from tests.support.entries import corrupt_entries, stable, stored_entries
from tests.support.topologies import over_topologies

IN_RANGE_MS = 2**32 * 1000  # where the fast path formats `at` itself


def flat(fields: dict[str, str]) -> list[str]:
    """An entry's fields as hiredis gives XRANGE's raw reply."""
    return [part for pair in fields.items() for part in pair]


def block(item: Framed | Event | Unreadable) -> bytes | Unreadable:
    if isinstance(item, Framed):
        return item.frame
    if isinstance(item, Event):
        return sse_event(item)
    return item


def compact(event: Event, *, at_in_e: bool = False) -> tuple[str, dict[str, str]]:
    meta = str(event.attempt * 100 + TYPE_CODES[event.type])
    return event.id, {
        "e": f"{meta} {event.at}" if at_in_e else meta,
        "d": pack_data(event.type, event.data),
        "k": event.key or "",
    }


ODD_TEXT = 'é 日本 🎉 \u2028 \u0000 \n\t "quoted" \\ back/slash'
BIG = [2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63) - 1, -(10**30)]
NESTED = {"a": [{"b": {"c": [1, 2.5, None, True, ODD_TEXT]}}], "empty": {}, "list": [], ODD_TEXT: BIG}
ARTIFACT = {"name": "out.csv", "size_bytes": 2**40, "sha256": "ab" * 32, "content_type": "text/csv"}
ERROR = {"type": "ValueError", "message": ODD_TEXT}
# Per type, data as check_data makes it: every field, the optional ones left out, odd values.
DATA: dict[EventType, list[dict[str, Any]]] = {
    EventType.SUBMITTED: [
        {"kind": "k", "params": NESTED, "max_attempts": 3},
        {"kind": ODD_TEXT, "params": {}, "max_attempts": 2**64 - 1, "tenant": "t"},
    ],
    EventType.STARTED: [{"worker": ODD_TEXT, "attempt": 1}, {"worker": "w", "attempt": 10**30}],
    EventType.PROGRESS: [
        {"progress": 0.5},
        {"progress": 0.0, "current": 0, "total": 2**64},
        {"progress": 1.0, "current": 3, "total": 7, "message": ODD_TEXT, "phase": "p"},
        {"progress": 1 / 3, "phase": "only phase"},
        {"progress": 5e-324, "message": ""},
    ],
    EventType.PHASE: [{"phase": "a"}, {"phase": ODD_TEXT, "message": ODD_TEXT}],
    EventType.LOG: [{"level": "info", "message": ODD_TEXT}],
    EventType.CANCEL_REQUESTED: [{}, {"reason": ODD_TEXT}],
    EventType.RETRYING: [{"error": ERROR, "delay_s": 0.25, "next_attempt": 2}, {"error": ERROR, "delay_s": 1e300,
                                                                                  "next_attempt": 2**64}],
    EventType.SUCCEEDED: [{}, {"result": NESTED}, {"result": BIG, "artifact": ARTIFACT}, {"artifact": ARTIFACT},
                          {"result": ODD_TEXT}, {"result": [None]}, {"result": False}],
    EventType.FAILED: [{"error": ERROR}],
    EventType.CANCELLED: [{}, {"reason": ""}],
}
# ids and times around the edges: ms 0, a whole second, the last ms of the range, sequences past u64.
TIMES = [("0-0", 0), ("1000-1", 1000), ("1764700000123-5", 1764700000123), (f"{IN_RANGE_MS - 1}-18446744073709551615",
                                                                            IN_RANGE_MS - 1)]


def test_every_type_with_odd_values_is_framed_as_the_event_path_frames_it():
    checked = 0
    for event_type, datas in DATA.items():
        for data in datas:
            for entry_id, at in TIMES:
                for attempt in (0, 1, 99, 2**40):
                    event = Event(id=entry_id, type=event_type, at=at, attempt=attempt, data=data, key="k")
                    for at_in_e in (False, True):
                        _, fields = compact(event, at_in_e=at_in_e)
                        framed = frame_of_entry(entry_id, fields["e"], fields["d"])
                        assert framed is not None, (event_type, data, at_in_e)
                        expected = sse_event(Event.from_entry(entry_id, fields))
                        assert framed.frame == expected
                        assert (framed.id, framed.type, framed.terminal) == (entry_id, event_type, event.terminal)
                        checked += 1
    assert checked == 2 * 4 * 4 * sum(len(datas) for datas in DATA.values())


def test_an_explicit_at_elsewhere_in_the_id_second_is_its_own():
    # `at` given by the producer, not the id's: the frame shows the given time.
    event = Event(id="1764700000123-0", type=EventType.LOG, at=1000, attempt=1, data={"level": "a", "message": "b"})
    entry_id, fields = compact(event, at_in_e=True)
    framed = frame_of_entry(entry_id, fields["e"], fields["d"])
    assert framed is not None and b'"at":"1970-01-01T00:00:01Z"' in framed.frame
    assert framed.frame == sse_event(event)


@stable
@given(entry=stored_entries(), as_list=st.booleans())
def test_every_entry_the_append_script_writes_is_framed_as_its_event(entry, as_list):
    entry_id, fields, event = entry
    (item,) = sse_frames([(entry_id, flat(fields) if as_list else fields)])
    assert block(item) == sse_event(event)
    # Taken by the fast path whenever the entry is compact and its time in range.
    assert isinstance(item, Framed) == ("e" in fields and 0 <= event.at < IN_RANGE_MS)


@stable
@given(entry=corrupt_entries(), as_list=st.booleans())
def test_a_corrupt_entry_gets_what_the_event_path_gives_it(entry, as_list):
    entry_id, fields = entry
    (expected,) = readable_entries([(entry_id, fields)])
    (got,) = sse_frames([(entry_id, flat(fields) if as_list else fields)])
    if isinstance(expected, Unreadable):
        assert isinstance(got, Unreadable) and got.id == expected.id and str(got.error) == str(expected.error)
        return
    try:
        frame = sse_event(expected)
    except (TypeError, ValueError, OverflowError):  # the Event path fails when it sends it: so must this
        assert got == expected
        return
    assert block(got) == frame


def test_the_raw_client_shares_the_pool_and_only_xrange_answers_raw(redis_client: aioredis.Redis):
    raw = raw_client(redis_client)
    assert raw is not redis_client and raw_client(redis_client) is raw, "one twin per client"
    assert raw.connection_pool is redis_client.connection_pool
    assert "XRANGE" in redis_client.response_callbacks, "the client itself is left as it was"
    assert raw.response_callbacks.keys() - redis_client.response_callbacks.keys() == set()
    assert redis_client.response_callbacks.keys() - raw.response_callbacks.keys() == {"XRANGE"}


@over_topologies  # a Cluster client reads its pages through redis-py's callback: dicts, not lists
async def test_a_replay_over_sse_is_the_event_path_byte_for_byte(client, events: EventLog, redis_client, keys: Keys,
                                                                  settings):
    # Every type a job can hold once finished, odd values, and more than a page (app/follow.py,
    # REPLAY_PAGE): the first page comes with the job's state, the rest through raw_pages.
    job = "odd"
    await events.append(job, EventType.SUBMITTED, DATA[EventType.SUBMITTED][0])
    for attempt in (1, 2):
        await events.append(job, EventType.STARTED, {"worker": ODD_TEXT, "attempt": attempt}, attempt=attempt)
        for data in DATA[EventType.PROGRESS] * 250:
            await events.append(job, EventType.PROGRESS, data, attempt=attempt)
        for event_type in (EventType.PHASE, EventType.LOG, EventType.CANCEL_REQUESTED):
            for data in DATA[event_type]:
                await events.append(job, event_type, data, attempt=attempt, at_ms=1000)
        if attempt == 1:
            await events.append(job, EventType.RETRYING, DATA[EventType.RETRYING][0], attempt=1)
    await events.append(job, EventType.SUCCEEDED, DATA[EventType.SUCCEEDED][2], attempt=2)

    async with client.stream("GET", f"/jobs/{job}/events") as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])

    entries = await redis_client.xrange(keys.events(job))
    assert len(entries) > 2500
    expected = b"".join(sse_event(Event.from_entry(entry_id, fields)) for entry_id, fields in entries)
    assert body == b"retry: %d\n\n" % settings.sse_retry_ms + expected
    # The history's reader (raw pages too) reads every event back as before.
    assert [e async for e in events.events(job)] == [Event.from_entry(i, f) for i, f in entries]
    assert readable_raw_entries([(i, flat(f)) for i, f in entries]) == readable_entries(entries)
    assert msgspec.json.decode(expected.split(b"data: ", 2)[1].split(b"\n")[0])["data"] == DATA[EventType.SUBMITTED][0]

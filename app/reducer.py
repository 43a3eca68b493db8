"""How events fold into the current-state hash.

The append script applies the same rules inside Redis: the bookkeeping fields (state,
timestamps, attempt, last event id, count) come from the transition table, and the
data-derived fields come from `fields_for`, which the appender passes to the script.
`fold` replays a whole stream with both, so `HGETALL` of a job must equal `fold` of its
stream; the property test in tests/test_fold_matches_script.py holds them to that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import msgspec

from jobtrail.events import ABSENT, RULES, Event, EventType

_json = msgspec.json.encode


def _num(value: Any) -> str:
    # repr of a float round-trips exactly, so both paths produce the same text. A job's
    # progress at its start and end, 0 and 1, without the ".0": Redis stores those as small
    # integers, and every finished job's hash holds one.
    number = float(value)
    if number == 1.0 or (number == 0.0 and math.copysign(1.0, number) > 0):
        return str(int(number))
    return repr(number)


def fields_for(event_type: EventType, data: dict[str, Any]) -> dict[str, str]:
    """The hash fields an event's data sets, beyond the table's bookkeeping."""
    match event_type:
        case EventType.PROGRESS | EventType.PHASE:  # first: nearly every event a worker writes
            fields = {}
            phase, message = data.get("phase"), data.get("message")
            if phase is not None:
                fields["phase"] = phase
            if message is not None:
                fields["message"] = message
            if "progress" in data:
                fields["progress"] = _num(data["progress"])
            return fields
        case EventType.SUBMITTED:
            return {
                "kind": data["kind"],
                "params": _json(data["params"]).decode(),
                "max_attempts": str(data["max_attempts"]),
                "progress": _num(0),
                "cancel_requested": "0",
                **({"tenant": data["tenant"]} if data.get("tenant") else {}),
            }
        case EventType.STARTED:
            # A new attempt starts from scratch.
            return {"progress": _num(0), "phase": "", "message": ""}
        case EventType.CANCEL_REQUESTED:
            return {"cancel_requested": "1"}
        case EventType.RETRYING | EventType.FAILED:
            return {"error": _json(data["error"]).decode()}
        case EventType.SUCCEEDED:
            fields = {"progress": _num(1), "result": _json(data.get("result")).decode()}
            if data.get("artifact") is not None:
                fields["artifact"] = _json(data["artifact"]).decode()
            return fields
        case _:
            return {}


def bookkeeping(event: Event) -> dict[str, str]:
    """The fields every append sets from the event itself and the transition table."""
    rule = RULES[event.type]
    fields = {"updated_at": str(event.at), "last_event_id": event.id, "attempt": str(event.attempt)}
    if rule.next_state is not None:
        fields["state"] = rule.next_state.value
    if rule.stamp is not None:
        fields[rule.stamp] = str(event.at)
    if rule.opens:
        fields["incarnation"] = event.id
    return fields


class IllegalHistory(ValueError):
    """A stream holds an event its job's state did not allow: the stream is corrupt."""


def fold(events: Iterable[Event]) -> dict[str, str]:
    """The state hash that appending `events` in order leaves behind.

    The attempt and incarnation fences (`Rule.attempt`, the `incarnation` an append
    names) are not checked here: they guard writers, and a stream written before they
    existed may hold a superseded attempt's events.
    """
    state: dict[str, str] = {}
    for event in events:
        current = state.get("state", ABSENT)
        if current not in RULES[event.type].allowed:
            raise IllegalHistory(f"event {event.id} ({event.type}) is not allowed in state {current}")
        state.update(bookkeeping(event))
        state.update(fields_for(event.type, event.data))
        state["event_count"] = str(int(state.get("event_count", "0")) + 1)
    return state

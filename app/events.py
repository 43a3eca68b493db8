"""Event types, the job state machine as data, and the event wire types.

The transition table below is the single definition of what may happen to a job: the
Python fold reads it, the Lua append script gets it rendered into its header, and the
tests quote it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

import msgspec

SCHEMA_VERSION = 1


class State(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventType(enum.StrEnum):
    SUBMITTED = "submitted"
    STARTED = "started"
    PROGRESS = "progress"
    PHASE = "phase"
    LOG = "log"
    CANCEL_REQUESTED = "cancel_requested"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The "state" of a job that does not exist yet, as the table spells it.
ABSENT = "absent"
TERMINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


class Rule(NamedTuple):
    allowed: frozenset[str]  # states in which the event may be appended
    next_state: State | None  # None: the state does not change
    stamp: str | None  # timestamp field the event sets to its `at`
    # An event that names its attempt must name the job's current one ("current"), or
    # the one after it ("next", for `started`): a worker that lost its job (frozen past
    # its lease, say) must not write into the attempt that replaced its own.
    attempt: str | None = "current"
    # The event opens an incarnation of the job id: its own id becomes the job's
    # `incarnation`. A job deleted and submitted again under the same id (the same
    # Idempotency-Key) is a new incarnation, and a writer that names the old one is
    # refused, even when the attempt numbers agree.
    opens: bool = False


_LIVE = frozenset({State.PENDING, State.RUNNING})
_RUNNING = frozenset({State.RUNNING})

RULES: dict[EventType, Rule] = {
    EventType.SUBMITTED: Rule(frozenset({ABSENT}), State.PENDING, "created_at", attempt=None, opens=True),
    EventType.STARTED: Rule(frozenset({State.PENDING}), State.RUNNING, "started_at", attempt="next"),
    EventType.PROGRESS: Rule(_RUNNING, None, None),
    EventType.PHASE: Rule(_RUNNING, None, None),
    EventType.LOG: Rule(_LIVE, None, None),
    EventType.CANCEL_REQUESTED: Rule(_LIVE, None, None),
    EventType.RETRYING: Rule(_RUNNING, State.PENDING, None),
    EventType.SUCCEEDED: Rule(_RUNNING, State.SUCCEEDED, "finished_at"),
    EventType.FAILED: Rule(_LIVE, State.FAILED, "finished_at"),
    EventType.CANCELLED: Rule(_LIVE, State.CANCELLED, "finished_at"),
}


# --- event data, one Struct per type: what producers may put in `data` ---

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]


class ErrorInfo(msgspec.Struct, frozen=True):
    type: str
    message: Text


class SubmittedData(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: str
    params: dict[str, Any]
    max_attempts: int
    tenant: str | None = None  # None: submitted by an admin, or with access control off


class StartedData(msgspec.Struct, frozen=True):
    worker: str
    attempt: int


class ProgressData(msgspec.Struct, frozen=True, omit_defaults=True):
    progress: Fraction
    current: int | None = None
    total: int | None = None
    message: Text | None = None
    phase: str | None = None


class PhaseData(msgspec.Struct, frozen=True, omit_defaults=True):
    phase: str
    message: Text | None = None


class LogData(msgspec.Struct, frozen=True):
    level: str
    message: Text


class ReasonData(msgspec.Struct, frozen=True, omit_defaults=True):
    reason: Text | None = None


class RetryingData(msgspec.Struct, frozen=True):
    error: ErrorInfo
    delay_s: float
    next_attempt: int


class Artifact(msgspec.Struct, frozen=True):
    """The file a job produced (see app/artifacts.py)."""

    name: str
    size_bytes: int
    sha256: str
    content_type: str


class SucceededData(msgspec.Struct, frozen=True, omit_defaults=True):
    result: Any = None
    artifact: Artifact | None = None


class FailedData(msgspec.Struct, frozen=True):
    error: ErrorInfo


DATA_TYPES: dict[EventType, type[msgspec.Struct]] = {
    EventType.SUBMITTED: SubmittedData,
    EventType.STARTED: StartedData,
    EventType.PROGRESS: ProgressData,
    EventType.PHASE: PhaseData,
    EventType.LOG: LogData,
    EventType.CANCEL_REQUESTED: ReasonData,
    EventType.RETRYING: RetryingData,
    EventType.SUCCEEDED: SucceededData,
    EventType.FAILED: FailedData,
    EventType.CANCELLED: ReasonData,
}


def check_data(event_type: EventType, data: msgspec.Struct | dict[str, Any]) -> dict[str, Any]:
    """`data` as a plain JSON object, validated against the type's Struct (ValidationError if not)."""
    struct = DATA_TYPES[event_type]
    if not isinstance(data, struct):
        data = msgspec.convert(data, struct)
    return msgspec.to_builtins(data)


# --- stored and wire forms of an event ---


class CorruptEvent(ValueError):
    """A stream entry that is not an event: a field missing, not a number, or not a JSON object."""


_decode_data = msgspec.json.Decoder(dict[str, Any]).decode
_decode_values = msgspec.json.Decoder(list[Any]).decode
_encode_json = msgspec.json.encode

# The stream entry layout since the compact encoding (app/append.lua writes it):
#   e  attempt * 100 + the type's code (TYPE_CODES); then a space and `at` in epoch ms when
#      that is not the entry id's milliseconds (an `at` given, not the server's clock)
#   d  data: its values in the type's Struct order, a JSON array without its brackets (pack_data)
#   k  idempotency key, '' for none
# Every entry has these three fields in this order, so that each entry of a stream node has
# its node's first field set, which Redis then does not store again per entry. Entries
# written before (type, at, v, attempt, data[, key]) stay readable: `type` tells them apart.
ENTRY_FIELDS = ("e", "d", "k")

# Never renumbered: stored entries hold these.
TYPE_CODES: dict[EventType, int] = {
    EventType.SUBMITTED: 1,
    EventType.STARTED: 2,
    EventType.PROGRESS: 3,
    EventType.PHASE: 4,
    EventType.LOG: 5,
    EventType.CANCEL_REQUESTED: 6,
    EventType.RETRYING: 7,
    EventType.SUCCEEDED: 8,
    EventType.FAILED: 9,
    EventType.CANCELLED: 10,
}
_TYPE_OF_CODE = {code: event_type for event_type, code in TYPE_CODES.items()}
# Per type: its Struct's field names, and whether a field at its default is left out, which
# for these Structs (every default None) is what a null in the array stands for. Stored
# entries hold values by position: a field may only be added to one of DATA_TYPES at its
# end, and never removed or moved.
_LAYOUTS: dict[EventType, tuple[tuple[str, ...], bool, frozenset[str]]] = {
    event_type: (struct.__struct_fields__, struct.__struct_config__.omit_defaults, frozenset(struct.__struct_fields__))
    for event_type, struct in DATA_TYPES.items()
}


def pack_data(event_type: EventType, data: dict[str, Any]) -> str:
    """`data` (as check_data makes it) as its values in the type's Struct order, JSON without the brackets.

    A field left out (at its default, None) is a null, and trailing ones are dropped.
    ValueError for a dict check_data could not have made. (Every report a worker writes
    comes through here: the checks are set comparisons and counts, in C.)
    """
    names, omits, name_set = _LAYOUTS[event_type]
    values = [data.get(name) for name in names]
    if omits:
        while values and values[-1] is None:
            values.pop()
        fits = data.keys() <= name_set and len(data) == len(values) - values.count(None)
    else:
        fits = data.keys() == name_set
    if not fits:
        raise ValueError(f"{event_type.value} data {sorted(data)!r:.100} is not its Struct's")
    return _encode_json(values)[1:-1].decode()


def unpack_data(event_type: EventType, text: str) -> dict[str, Any]:
    """The data dict `pack_data` packed; ValueError when `text` is not such values."""
    values = _decode_values(f"[{text}]")
    names, omits, _ = _LAYOUTS[event_type]
    if len(values) > len(names):
        raise ValueError(f"{len(values)} values for the {len(names)} fields of {event_type.value}")
    # Fewer values than fields: those after them are left out, or were added to the Struct
    # after the entry was written.
    if omits:
        return {name: value for name, value in zip(names, values) if value is not None}  # noqa: B905
    return dict(zip(names, values))  # noqa: B905


def entry_type(fields: dict[str, str]) -> str | None:
    """The event type an entry holds, in either layout, without decoding the rest; None if it names none."""
    if "type" in fields:
        return fields["type"]
    try:
        event_type = _TYPE_OF_CODE.get(int(fields["e"].partition(" ")[0]) % 100)
    except (KeyError, ValueError):
        return None
    return event_type.value if event_type else None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the stream holds it; `id` is the stream entry id."""

    id: str
    type: EventType
    at: int  # epoch milliseconds
    attempt: int
    data: dict[str, Any]
    v: int = SCHEMA_VERSION
    key: str | None = None

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        """Decode one XRANGE/XREAD entry; CorruptEvent (a ValueError) when it is not a valid event."""
        try:
            event = cls._compact(entry_id, fields) if "e" in fields else cls._verbose(entry_id, fields)
            # Refused here, not later: every reader turns `at` into a datetime. Within
            # _DATETIME_SAFE_MS it always is one (a replay decodes 100,000 of them), so only
            # an `at` outside is tried.
            if not 0 <= event.at < _DATETIME_SAFE_MS:
                ms_to_datetime(event.at)
        except (KeyError, TypeError, ValueError, OverflowError, OSError, RecursionError) as exc:
            raise CorruptEvent(f"stream entry {entry_id} is not a valid event: {exc!r:.200}") from exc
        return event

    @classmethod
    def _compact(cls, entry_id: str, fields: dict[str, str]) -> Event:
        if "type" in fields or len(fields) != len(ENTRY_FIELDS):
            raise ValueError(f"fields {sorted(fields)!r:.100} are neither layout's")
        meta, _, at = fields["e"].partition(" ")
        if not (meta.isascii() and meta.isdigit()):
            raise ValueError(f"e={fields['e']!r:.40} is no attempt and type")
        attempt, code = divmod(int(meta), 100)
        event_type = _TYPE_OF_CODE[code]
        return cls(
            id=entry_id,
            type=event_type,
            at=int(at) if at else int(entry_id[: entry_id.find("-")] if "-" in entry_id else entry_id),
            attempt=attempt,
            data=unpack_data(event_type, fields["d"]),
            key=fields["k"] or None,
        )

    @classmethod
    def _verbose(cls, entry_id: str, fields: dict[str, str]) -> Event:
        return cls(
            id=entry_id,
            type=EventType(fields["type"]),
            at=int(fields["at"]),
            attempt=int(fields["attempt"]),
            data=_decode_data(fields["data"]),
            v=int(fields.get("v", SCHEMA_VERSION)),
            key=fields.get("key"),
        )

    def out(self) -> EventOut:
        return EventOut(id=self.id, type=self.type, at=ms_to_datetime(self.at), attempt=self.attempt, data=self.data)

    @property
    def terminal(self) -> bool:
        return RULES[self.type].next_state in TERMINAL_STATES


class EventOut(msgspec.Struct, frozen=True):
    """An event as history pages and SSE `data:` lines show it."""

    id: str
    type: str
    at: datetime
    attempt: int
    data: dict[str, Any]


# Epoch ms from 1970 to 2106 (2**32 s): datetime.fromtimestamp takes every one of them.
_DATETIME_SAFE_MS = 2**32 * 1000


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)

"""The /ws wire: what a client may send (decoded and checked here) and every frame the server sends.

Client frames are JSON objects with an `op`; server frames are JSON objects with a
`type`, except the events and feed entries themselves, which are the objects SSE sends
as `data:` plus `"job"` (or `"feed": true`). /work/notes/ws-protocol.md and the README's
WebSocket section describe the protocol; this module is its one implementation.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from jobtrail.activity import Transition
from jobtrail.errors import InvalidRequest
from jobtrail.events import EventOut, State
from jobtrail.jobstate import JobState
from jobtrail.offsets import parse_offset

# --- client -> server ---


class BadMessage(Exception):
    """A client frame the server cannot act on; `code` and the message go back in an error frame."""

    def __init__(self, code: str, message: str, job: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.job = job


class Subscribe(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="subscribe"):
    job: str | None = None
    feed: bool = False
    after: str | None = None
    kind: str | None = None
    state: State | None = None


class Unsubscribe(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="unsubscribe"):
    job: str | None = None
    feed: bool = False


class Ping(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="ping"):
    pass


ClientMessage = Subscribe | Unsubscribe | Ping
_OPS = ("subscribe", "unsubscribe", "ping")
FEED = "feed"  # the target of a feed subscription; a job's target is its id
_KIND_MAX = 100


def target_of(message: Subscribe | Unsubscribe) -> str:
    """Which subscription a message is about: a job id, or FEED; BadMessage unless exactly one is named."""
    if message.feed and message.job is not None:
        raise BadMessage("bad_message", "name either `job` or `\"feed\": true`, not both", message.job)
    if message.feed:
        return FEED
    if message.job is None:
        raise BadMessage("bad_message", "name a `job` (its id) or `\"feed\": true`")
    if isinstance(message, Subscribe) and (message.kind is not None or message.state is not None):
        raise BadMessage("bad_message", "`kind` and `state` filter the feed only", message.job)
    return message.job


def subscribe_offset(message: Subscribe) -> str | None:
    """The checked `after` of a subscribe (None: not given); BadMessage when it is not an event id."""
    if message.after is None:
        return None
    try:
        return parse_offset(message.after)
    except InvalidRequest as exc:
        raise BadMessage("bad_message", str(exc), message.job) from None


def decode_client(raw: str | bytes | None, max_bytes: int) -> ClientMessage:
    """One client frame as a message; BadMessage saying what is wrong with it."""
    if raw is None or isinstance(raw, bytes):
        raise BadMessage("bad_message", "send JSON text frames, not binary ones")
    if len(raw) > max_bytes or len(raw.encode()) > max_bytes:
        raise BadMessage("message_too_large", f"a message may have at most {max_bytes} bytes")
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadMessage("bad_json", f"the message is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadMessage("bad_message", 'a message is a JSON object with an "op"')
    op = value.get("op")
    if op not in _OPS:
        raise BadMessage("unknown_op", f"op must be one of {', '.join(_OPS)}, not {op!r:.40}")
    try:
        message = msgspec.convert(value, ClientMessage)
    except msgspec.ValidationError as exc:
        raise BadMessage("bad_message", f"{op}: {exc}") from None
    if isinstance(message, Subscribe) and message.kind is not None and len(message.kind) > _KIND_MAX:
        raise BadMessage("bad_message", f"kind may have at most {_KIND_MAX} characters")
    return message


# --- server -> client ---


class JobEventFrame(EventOut, frozen=True, kw_only=True):
    """A job's event: the object SSE sends as `data:`, and the job's id."""

    job: str


class FeedEntryFrame(Transition, frozen=True, kw_only=True):
    """A feed entry: the object /events sends as `data:`, marked as the feed's."""

    feed: Literal[True] = True


class _Frame(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """A frame about one subscription: its job's id, or `"feed": true`."""

    job: str | None = None
    feed: bool = False


class Subscribed(_Frame, frozen=True, kw_only=True, tag="subscribed"):
    pass


class JobGap(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="gap"):
    job: str
    state: JobState


class FeedGapFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="gap"):
    first_available: str | None
    feed: Literal[True] = True


class SkippedFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="skipped"):
    job: str
    id: str


class EndFrame(_Frame, frozen=True, kw_only=True, tag="end"):
    """A subscription ended (or, with neither job nor feed, the socket is about to close)."""

    reason: str


class ErrorFrame(_Frame, frozen=True, kw_only=True, tag="error"):
    code: str
    message: str


class Pong(msgspec.Struct, frozen=True, tag_field="type", tag="pong"):
    pass


_encode = msgspec.json.Encoder().encode


def encode(frame: msgspec.Struct) -> bytes:
    return _encode(frame)


def about(target: str) -> dict[str, Any]:
    """The fields that say which subscription a frame is about."""
    return {"feed": True} if target == FEED else {"job": target}

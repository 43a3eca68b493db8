"""The I/O a client operation asks for, as data: the seam between the sans-IO core and its transports.

An operation (app/client/core.py) is a generator. It yields an effect and is sent the
effect's outcome; it yields anything else as an item for the caller (an event of a
stream); its return value is the operation's result. `Client` and `AsyncClient`
perform the same effects with httpx's sync and async APIs, so request building,
decoding, paging, resuming and retrying are written once.

A transport failure is thrown into the operation as `Unavailable` (for `Call` and
`Open`) or `StreamDropped` (for `Read`), where the operation may catch it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import msgspec

from jobtrail.client.errors import Unavailable

T = TypeVar("T")


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One request whose whole answer is read (one round trip). Outcome: a `Reply`."""

    method: str
    path: str
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    json: Any = None
    has_body: bool = False  # send `json` even when it is None (`null`)
    timeout: float | None = None  # None: the client's default


class Open(msgspec.Struct, frozen=True):
    """Start a streamed answer, closing any stream still open. Outcome: a `Reply`.

    A 200's body is left to `Read`; any other status's body is read whole into the
    reply and the stream closed. `read_timeout` bounds each read of the body.
    """

    call: Call
    read_timeout: float | None = None


class Read(msgspec.Struct, frozen=True):
    """The next bytes of the open stream, as they arrive. Outcome: bytes; b"" once it has ended."""


class Sleep(msgspec.Struct, frozen=True):
    seconds: float


Effect = Call | Open | Read | Sleep
EFFECTS = (Call, Open, Read, Sleep)


class Reply(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]  # names in lower case
    content: bytes = b""


class StreamDropped(Unavailable):
    """The open stream broke or stalled before the server ended it."""


# An operation: yields effects (and items), receives their outcomes, returns its result.
Operation = Generator[Any, Any, T]


class Done(msgspec.Struct, frozen=True):
    """Wraps an operation's return value where a driver hands it out as its last item."""

    value: Any

"""A small SSE client for tests: reads messages as a browser's EventSource would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


@dataclass
class Message:
    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Messages of an open text/event-stream response (comment-only blocks included)."""
    current = Message()
    seen = False
    async for line in response.aiter_lines():
        if line == "":
            if seen:
                yield current
            current, seen = Message(), False
            continue
        seen = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = int(value)


async def collect(
    client: httpx.AsyncClient, path: str, *, headers: dict[str, str] | None = None, limit: int | None = None
) -> list[Message]:
    """Every event message (not comments) until the server closes, or `limit` of them."""
    found: list[Message] = []
    async with client.stream("GET", path, headers=headers) as response:
        response.raise_for_status()
        async for message in messages(response):
            if message.data:
                found.append(message)
                if limit is not None and len(found) >= limit:
                    break
    return found


class EventStream:
    """One open SSE response, read a message at a time with a deadline on each read."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._messages = messages(response)
        self.received: list[Message] = []  # every block read so far, comments included

    async def next(self, timeout: float = 5.0) -> Message | None:
        """The next block (event, retry hint or comment); None once the server has closed."""
        try:
            async with asyncio.timeout(timeout):
                message = await anext(self._messages)
        except StopAsyncIteration:
            return None
        self.received.append(message)
        return message

    async def next_event(self, timeout: float = 5.0) -> Message | None:
        """The next message that carries data (comments and hints skipped); None at the end."""
        async with asyncio.timeout(timeout):
            while (message := await self.next(timeout)) is not None:
                if message.data:
                    return message
        return None

    async def events(self, count: int, timeout: float = 5.0) -> list[Message]:
        """Exactly `count` data messages; fails if the stream ends or stalls first."""
        found = []
        for _ in range(count):
            message = await self.next_event(timeout)
            assert message is not None, f"stream ended after {len(found)} of {count} events"
            found.append(message)
        return found

    async def rest(self, timeout: float = 10.0) -> list[Message]:
        """Every data message until the server closes the stream (within `timeout`)."""
        found = []
        async with asyncio.timeout(timeout):
            while (message := await self.next_event(timeout)) is not None:
                found.append(message)
        return found


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, path: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    """GET an SSE endpoint, check it answered 200 text/event-stream; closing disconnects."""
    async with client.stream("GET", path, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


# The compact entry layout written out here, not imported: (type, its data's fields) per code.
ENTRY_TYPES = {
    1: ("submitted", ("kind", "params", "max_attempts", "tenant")),
    2: ("started", ("worker", "attempt")),
    3: ("progress", ("progress", "current", "total", "message", "phase")),
    4: ("phase", ("phase", "message")),
    5: ("log", ("level", "message")),
    6: ("cancel_requested", ("reason",)),
    7: ("retrying", ("error", "delay_s", "next_attempt")),
    8: ("succeeded", ("result", "artifact")),
    9: ("failed", ("error",)),
    10: ("cancelled", ("reason",)),
}


def entry_at_ms(entry_id: str, fields: dict[str, str]) -> int:
    """A raw entry's `at`: its own field, or in the compact layout when left empty, its id's milliseconds."""
    if "type" in fields:
        return int(fields["at"])
    _, _, at = fields["e"].partition(" ")
    return int(at or entry_id.partition("-")[0])


def expected_event(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """What an SSE `data:` line must hold for one raw stream entry, built without app code."""
    if "type" in fields:
        return {
            "id": entry_id,
            "type": fields["type"],
            "at": datetime.fromtimestamp(int(fields["at"]) / 1000, tz=UTC),
            "attempt": int(fields["attempt"]),
            "data": json.loads(fields["data"]),
        }
    attempt, code = divmod(int(fields["e"].split(" ")[0]), 100)
    event_type, names = ENTRY_TYPES[code]
    # The values in field order, a JSON array without its brackets; a null for a field left out.
    values = json.loads("[" + fields["d"] + "]")
    data = {name: value for name, value in zip(names, values, strict=False) if value is not None}
    return {
        "id": entry_id,
        "type": event_type,
        "at": datetime.fromtimestamp(entry_at_ms(entry_id, fields) / 1000, tz=UTC),
        "attempt": attempt,
        "data": data,
    }


def as_expected(message: Message) -> dict[str, Any]:
    """An SSE event message in the shape of `expected_event` (its `at` parsed back to UTC)."""
    body = message.json
    at = datetime.fromisoformat(body["at"])
    assert at.utcoffset() == timedelta(0), f"`at` is not UTC: {body['at']}"
    return {**body, "at": at}

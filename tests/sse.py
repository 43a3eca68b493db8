"""A small SSE client for tests: reads messages as a browser's EventSource would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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

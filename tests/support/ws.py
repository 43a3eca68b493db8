"""A /ws client as tests use it: the `websockets` client, JSON frames, bounded waits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

# Bounds for waits: generous for a loaded machine, short enough that a hang fails fast.
FRAME_S = 15.0


class Socket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.connection.send(json.dumps(message))

    async def send_raw(self, raw: str | bytes) -> None:
        await self.connection.send(raw)

    async def next(self, timeout: float = FRAME_S) -> dict[str, Any]:
        frame = json.loads(await self.connection.recv(timeout))
        self.received.append(frame)
        return frame

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = FRAME_S) -> list[dict[str, Any]]:
        """Frames up to and including the first that `done` accepts."""
        frames = []
        while True:
            frame = await self.next(timeout)
            frames.append(frame)
            if done(frame):
                return frames

    async def until_end(self, job: str | None = None, *, feed: bool = False) -> list[dict[str, Any]]:
        """Frames up to and including the end of the subscription to `job` (or the feed)."""
        return await self.until(lambda f: f.get("type") == "end" and _about(f, job, feed))

    async def closed(self, timeout: float = FRAME_S) -> tuple[int | None, str | None]:
        """Wait until the server closes the socket (reading and keeping any frames); its close code and reason."""
        try:
            while True:
                self.received.append(json.loads(await self.connection.recv(timeout)))
        except websockets.ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, None)


def _about(frame: dict[str, Any], job: str | None, feed: bool) -> bool:
    return bool(frame.get("feed")) if feed else frame.get("job") == job


def ws_url(base: str, token: str | None = None) -> str:
    return base.replace("http://", "ws://", 1) + "/ws" + (f"?token={token}" if token else "")


@asynccontextmanager
async def open_socket(base: str, *, key: str | None = None, token: str | None = None) -> AsyncIterator[Socket]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with websockets.connect(ws_url(base, token), additional_headers=headers, open_timeout=FRAME_S) as conn:
        yield Socket(conn)


def events_of(frames: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    """The job events among `frames` (not acks, gaps or ends)."""
    return [f for f in frames if f.get("job") == job and "id" in f and f.get("type") not in ("skipped",)]

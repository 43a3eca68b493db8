"""Load generation over raw asyncio sockets: keep-alive HTTP/1.1 requests and SSE readers.

Lighter than httpx by an order of magnitude, so that on a 2-core machine the load
generator takes as little as possible from the servers it measures. The same client
drives jobtrail and the bare reference apps, so whatever it costs weighs on both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec

TIMEOUT_S = 30.0


class HttpError(Exception):
    """An answer that is not what the row expects (status, framing)."""


def request(method: str, path: str, body: bytes | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        return b"".join([chunk async for chunk in _chunks(reader)])
    return b""


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        chunk = await reader.readexactly(size + 2)
        yield chunk[:-2]


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[int, bytes]:
    writer.write(payload)
    status, headers = await _read_head(reader)
    return status, await _read_body(reader, headers)


async def rate(
    port: int, make: Callable[[int], bytes], *, expect: int, seconds: float, connections: int
) -> tuple[int, float]:
    """Requests answered with `expect` by the server on `port`, over `connections` keep-alive
    connections for `seconds`; (count, elapsed). `make(n)` builds the n-th request."""
    done = 0
    counter = iter(range(10**12))
    deadline = time.monotonic() + seconds

    async def one_connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                status, body = await asyncio.wait_for(exchange(reader, writer, make(next(counter))), TIMEOUT_S)
                if status != expect:
                    raise HttpError(f"expected {expect}, got {status}: {body[:200]!r}")
                done += 1
        finally:
            writer.close()

    start = time.monotonic()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return done, time.monotonic() - start


class SseMessage(msgspec.Struct):
    id: str | None
    event: str
    data: str
    received_ms: float  # wall clock, the clock stream entry ids are on (one machine)

    @property
    def emitted_ms(self) -> int | None:
        """When Redis appended the event: the milliseconds of its stream entry id."""
        return int(self.id.split("-")[0]) if self.id else None


async def sse(
    port: int, path: str, on_message: Callable[[SseMessage], bool], *, connected: asyncio.Event | None = None,
    timeout: float = 300.0,
) -> int:
    """Read an event stream until `on_message` returns True or the server closes it; its status.

    `connected` is set once the answer's head has arrived. A non-200 answer returns at once.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        async with asyncio.timeout(timeout):
            writer.write(request("GET", path))
            status, headers = await _read_head(reader)
            if connected is not None:
                connected.set()
            if status != 200:
                await _read_body(reader, headers)
                return status
            await _read_events(_chunks(reader) if headers.get("transfer-encoding") == "chunked" else _raw(reader),
                               on_message)
            return status
    finally:
        writer.close()


async def _raw(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(65536):
        yield chunk


def _message(block: bytes, now: float) -> SseMessage | None:
    """One SSE block as a message; None for one without data (a comment, a retry hint)."""
    lines = block.split(b"\n")
    if len(lines) == 3:
        # The shape of (almost) every block, `id:`, `event:`, `data:`, read without a loop:
        # a replay of 100,000 events is parsed faster than the server writes it.
        id_line, event_line, data_line = lines
        if id_line[:3] == b"id:" and event_line[:6] == b"event:" and data_line[:5] == b"data:":
            return SseMessage(id_line[3:].strip().decode(), event_line[6:].strip().decode(),
                              data_line[5:].lstrip(b" ").decode(), now)
    event, data, event_id = "message", [], None
    for line in block.decode().split("\n"):
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
    return SseMessage(event_id, event, "\n".join(data), now) if data else None


async def _read_events(chunks: AsyncIterator[bytes], on_message: Callable[[SseMessage], bool]) -> None:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *blocks, buffer = buffer.split(b"\n\n")
        now = time.time() * 1000
        for block in blocks:
            message = _message(block, now)
            if message is not None and on_message(message):
                return

"""An incremental text/event-stream parser, as the HTML standard defines it for EventSource.

Bytes go in as they arrive (any chunking); a block is handed out at each blank line.
Unlike EventSource, blocks without data are handed out too: an `id:` without data
moves the resume point (the API sends one to step over an unreadable entry), and a
`retry:` hint changes when to reconnect.
"""

from __future__ import annotations

import msgspec


class Block(msgspec.Struct):
    event: str = "message"
    data: str | None = None
    id: str | None = None
    retry_ms: int | None = None


class SseParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._block: Block | None = None
        self._after_cr = False  # the last chunk ended with \r: a \n starting this one is its pair

    def feed(self, chunk: bytes) -> list[Block]:
        """The blocks completed by `chunk`."""
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        self._buffer += chunk
        done: list[Block] = []
        while True:
            line, sep, rest = self._next_line()
            if not sep:
                return done
            self._buffer = rest
            if not line:
                if self._block is not None:
                    done.append(self._block)
                self._block = None
            else:
                self._field(line.decode("utf-8", "replace"))

    def _next_line(self) -> tuple[bytes, bytes, bytes]:
        # A line ends with \n, \r\n or \r; a \r at the very end may be the first half of \r\n.
        for i, byte in enumerate(self._buffer):
            if byte == 0x0A:
                return self._buffer[:i], b"\n", self._buffer[i + 1:]
            if byte == 0x0D:
                if i + 1 == len(self._buffer):
                    self._after_cr = True
                    return self._buffer[:i], b"\r", b""
                skip = 2 if self._buffer[i + 1] == 0x0A else 1
                return self._buffer[:i], b"\r", self._buffer[i + skip:]
        return b"", b"", self._buffer

    def _field(self, line: str) -> None:
        name, _, value = line.partition(":")
        if not name:
            return  # a comment (`: ping`)
        value = value.removeprefix(" ")
        block = self._block if self._block is not None else Block()
        if name == "data":
            block.data = value if block.data is None else f"{block.data}\n{value}"
        elif name == "event":
            block.event = value
        elif name == "id" and "\0" not in value:
            block.id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            block.retry_ms = int(value)
        else:
            return  # an unknown field is ignored, and does not start a block
        self._block = block

"""A TCP proxy in front of Redis that loses replies on purpose: the command runs, its answer never arrives.

That is what a timeout or a dropped connection does to a client, and redis-py then sends
the command again on a new connection (its Retry), which is the case to test.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class ReplyLosingProxy:
    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.path = parts.path
        self.marker: bytes | None = None
        self.lost = 0  # replies lost so far
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on a free port; returns a redis:// URL that goes through the proxy."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self.path}"

    def lose_reply_to(self, marker: bytes) -> None:
        """Lose the reply to the next command whose bytes contain `marker`, and drop that connection."""
        self.marker = marker

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        losing = asyncio.Event()  # set once this connection sent the marked command

        async def upstream() -> None:
            while data := await client_r.read(1 << 16):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    losing.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(1 << 16):
                if losing.is_set():
                    # The command ran (here is its answer); the client never learns it.
                    self.lost += 1
                    return
                client_w.write(data)
                await client_w.drain()

        tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
        self._tasks |= tasks
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks -= tasks
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()

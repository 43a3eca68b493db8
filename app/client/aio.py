"""`AsyncClient`: the jobtrail API from asyncio code, over httpx.AsyncClient.

The same operations as `Client` (app/client/core.py), performed with awaits. Stream
methods are async generators: leave one early with `contextlib.aclosing` (or let it
be collected) to close its connection.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from jobtrail.client import transport
from jobtrail.client.core import ClientCore
from jobtrail.client.effects import EFFECTS, Call, Done, Open, Operation, Read, Sleep
from jobtrail.client.follow import OnReconnect
from jobtrail.client.models import Event, FeedGap, Gap, JobState, Token, Transition

T = TypeVar("T")


class AsyncClient:
    """As `Client`, for asyncio; the same arguments."""

    def __init__(
        self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
        max_reconnect_delay_s: float = 30.0, stall_timeout_s: float = 60.0, give_up_after_s: float | None = 600.0,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=transport.default_headers(api_key), timeout=timeout)
        self._core = ClientCore(transport.policy(max_reconnect_delay_s, stall_timeout_s, give_up_after_s))

    # --- the API ---

    async def submit(
        self, kind: str, params: dict[str, Any] | None = None, *, idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> JobState:
        return await self._run(
            self._core.submit(kind, params, idempotency_key=idempotency_key, max_attempts=max_attempts)
        )

    async def get(self, job_id: str) -> JobState:
        return await self._run(self._core.get(job_id))

    def history(self, job_id: str, *, after: str | None = None, page_size: int = 100) -> AsyncIterator[Event]:
        return self._iterate(self._core.history(job_id, after=after, page_size=page_size))

    def events(
        self, job_id: str, after: str | None = None, *, on_reconnect: OnReconnect | None = None
    ) -> AsyncIterator[Event | Gap]:
        return self._iterate(self._core.events(job_id, after, on_reconnect=on_reconnect))

    async def wait(self, job_id: str, timeout: float | None = None) -> JobState:
        return await self._run(self._core.wait(job_id, timeout))

    async def cancel(self, job_id: str, reason: str | None = None) -> JobState:
        return await self._run(self._core.cancel(job_id, reason))

    async def delete(self, job_id: str) -> None:
        await self._run(self._core.delete(job_id))

    async def download_artifact(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        return await self._run(self._core.download_artifact(job_id, path))

    def activity(
        self, kind: str | None = None, state: str | None = None, after: str | None = None, *,
        on_reconnect: OnReconnect | None = None,
    ) -> AsyncIterator[Transition | FeedGap]:
        return self._iterate(self._core.activity(kind, state, after, on_reconnect=on_reconnect))

    async def token(self, job_id: str, ttl_s: int | None = None) -> Token:
        return await self._run(self._core.token(job_id, ttl_s))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- performing effects ---

    async def _run(self, operation: Operation[T]) -> T:
        steps = self._steps(operation)
        try:
            async for step in steps:
                if isinstance(step, Done):
                    return step.value  # type: ignore[no-any-return]
        finally:
            await steps.aclose()
        raise AssertionError("an operation ended without a result")

    async def _iterate(self, operation: Operation[Any]) -> AsyncIterator[Any]:
        steps = self._steps(operation)
        try:
            async for step in steps:
                if isinstance(step, Done):
                    return
                yield step
        finally:
            await steps.aclose()

    async def _steps(self, operation: Operation[Any]) -> AsyncGenerator[Any, None]:
        """Perform the operation's effects; yield its items, then `Done(result)`."""
        stream: httpx.Response | None = None
        chunks: AsyncIterator[bytes] | None = None
        outcome: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    step = operation.throw(error) if error is not None else operation.send(outcome)
                except StopIteration as stop:
                    yield Done(stop.value)
                    return
                outcome, error = None, None
                if not isinstance(step, EFFECTS):
                    yield step
                    continue
                try:
                    if isinstance(step, Call):
                        response = await self._http.send(transport.build(self._http, step))
                        outcome = transport.reply(response, response.content)
                    elif isinstance(step, Open):
                        if stream is not None:
                            await stream.aclose()
                        request = transport.build(self._http, step.call, step.read_timeout)
                        stream = await self._http.send(request, stream=True)
                        if stream.status_code == 200:
                            outcome, chunks = transport.reply(stream), stream.aiter_bytes()
                        else:
                            outcome = transport.reply(stream, await stream.aread())
                            await stream.aclose()
                            stream = None
                    elif isinstance(step, Read):
                        outcome = await _next_chunk(chunks)
                    elif isinstance(step, Sleep):
                        if stream is not None:  # a broken stream is not kept open while we wait
                            await stream.aclose()
                            stream = None
                        await asyncio.sleep(step.seconds)
                except transport.FAILURES as exc:
                    error = transport.dropped(exc) if isinstance(step, Read) else transport.unreachable(self._http, exc)
        finally:
            if stream is not None:
                await stream.aclose()
            operation.close()


async def _next_chunk(chunks: AsyncIterator[bytes] | None) -> bytes:
    if chunks is not None:
        async for chunk in chunks:
            if chunk:
                return chunk
    return b""

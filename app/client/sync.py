"""`Client`: the jobtrail API from synchronous code, over httpx.Client.

It runs the operations of app/client/core.py; their docstrings say what each does.
One `Client` may be shared by threads (httpx.Client is thread-safe); close it, or use
it as a context manager.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from jobtrail.client import transport
from jobtrail.client.core import ClientCore
from jobtrail.client.effects import EFFECTS, Call, Done, Open, Operation, Read, Sleep
from jobtrail.client.follow import OnReconnect
from jobtrail.client.models import Event, FeedGap, Gap, JobState, Token, Transition

T = TypeVar("T")


class Client:
    """A client of one jobtrail API at `base_url`, acting with `api_key` (if access control is on).

    `timeout` bounds each plain request. Event streams reconnect by themselves with a
    backoff of at most `max_reconnect_delay_s`, treat `stall_timeout_s` without a byte as
    a dropped connection, and raise `Unavailable` after `give_up_after_s` of failures in
    a row (None: never).
    """

    def __init__(
        self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
        max_reconnect_delay_s: float = 30.0, stall_timeout_s: float = 60.0, give_up_after_s: float | None = 600.0,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, headers=transport.default_headers(api_key), timeout=timeout)
        self._core = ClientCore(transport.policy(max_reconnect_delay_s, stall_timeout_s, give_up_after_s))

    # --- the API ---

    def submit(
        self, kind: str, params: dict[str, Any] | None = None, *, idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> JobState:
        return self._run(self._core.submit(kind, params, idempotency_key=idempotency_key, max_attempts=max_attempts))

    def get(self, job_id: str) -> JobState:
        return self._run(self._core.get(job_id))

    def history(self, job_id: str, *, after: str | None = None, page_size: int = 100) -> Iterator[Event]:
        return self._iterate(self._core.history(job_id, after=after, page_size=page_size))

    def events(
        self, job_id: str, after: str | None = None, *, on_reconnect: OnReconnect | None = None
    ) -> Iterator[Event | Gap]:
        return self._iterate(self._core.events(job_id, after, on_reconnect=on_reconnect))

    def wait(self, job_id: str, timeout: float | None = None) -> JobState:
        return self._run(self._core.wait(job_id, timeout))

    def cancel(self, job_id: str, reason: str | None = None) -> JobState:
        return self._run(self._core.cancel(job_id, reason))

    def delete(self, job_id: str) -> None:
        self._run(self._core.delete(job_id))

    def download_artifact(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        return self._run(self._core.download_artifact(job_id, path))

    def activity(
        self, kind: str | None = None, state: str | None = None, after: str | None = None, *,
        on_reconnect: OnReconnect | None = None,
    ) -> Iterator[Transition | FeedGap]:
        return self._iterate(self._core.activity(kind, state, after, on_reconnect=on_reconnect))

    def token(self, job_id: str, ttl_s: int | None = None) -> Token:
        return self._run(self._core.token(job_id, ttl_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- performing effects ---

    def _run(self, operation: Operation[T]) -> T:
        for step in self._steps(operation):
            if isinstance(step, Done):
                return step.value  # type: ignore[no-any-return]
        raise AssertionError("an operation ended without a result")

    def _iterate(self, operation: Operation[Any]) -> Iterator[Any]:
        for step in self._steps(operation):
            if isinstance(step, Done):
                return
            yield step

    def _steps(self, operation: Operation[Any]) -> Iterator[Any]:
        """Perform the operation's effects; yield its items, then `Done(result)`."""
        stream: httpx.Response | None = None
        chunks: Iterator[bytes] = iter(())
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
                        response = self._http.send(transport.build(self._http, step))
                        outcome = transport.reply(response, response.content)
                    elif isinstance(step, Open):
                        if stream is not None:
                            stream.close()
                        stream = self._http.send(transport.build(self._http, step.call, step.read_timeout), stream=True)
                        if stream.status_code == 200:
                            outcome, chunks = transport.reply(stream), stream.iter_bytes()
                        else:
                            outcome = transport.reply(stream, stream.read())
                            stream.close()
                            stream = None
                    elif isinstance(step, Read):
                        outcome = next((chunk for chunk in chunks if chunk), b"")
                    elif isinstance(step, Sleep):
                        if stream is not None:  # a broken stream is not kept open while we wait
                            stream.close()
                            stream = None
                        time.sleep(step.seconds)
                except transport.FAILURES as exc:
                    error = transport.dropped(exc) if isinstance(step, Read) else transport.unreachable(self._http, exc)
        finally:
            if stream is not None:
                stream.close()
            operation.close()

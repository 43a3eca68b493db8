"""What one request may take: a few query parameters, and a deadline for its answer to start.

**The deadline.** Per-command Redis timeouts do not bound a request: a stalled Redis
(`DEBUG SLEEP`, a frozen primary) lets each command wait out its own socket timeout,
and retry, and a submission makes several round trips (rate limit, append, index,
the broker's enqueue on its own pool), so it hung for 30 s and more. Here one
deadline, JOBTRAIL_REDIS_TIMEOUT_S, covers everything the server does for a request
until the first byte of its answer: guard (a token's signing key), dependencies,
handler. When it passes, the work is cancelled (redis-py drops a connection whose
command was cancelled, so the pool stays sane) and the answer is 503
`store_unavailable`, as for Redis down. A submission cut off this way may still have
been written; a retry with the same `Idempotency-Key` finds it, and the reaper queues a
job whose enqueue was cut (workers/reaper.py).

The deadline stops at the response's start: an SSE stream (or an NDJSON history, or a
file) is long-lived by design and watches Redis itself. Waiting for the client's body
is not counted (that time is the client's), nor what a route runs under
`deadline_paused()`: the audit report, once its job is found, reads a history of any
length and renders it, like a stream's body (each page read still has its own
socket timeout).

**Query parameters.** No route takes more than a handful; more than MAX_QUERY_PARAMS
is refused with 400 before anything parses them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar

from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, ReceiveMessage, Scope, Send

from jobtrail.api.deadline import Deadline
from jobtrail.api.errors import send_error
from jobtrail.errors import InvalidRequest, StoreUnavailable

MAX_QUERY_PARAMS = 64

_DEADLINE: ContextVar[Deadline | None] = ContextVar("request_deadline", default=None)


@asynccontextmanager
async def deadline_paused() -> AsyncIterator[None]:
    """Inside, the request's deadline (if it has one still running) stands still."""
    deadline = _DEADLINE.get()
    if deadline is None:
        yield
        return
    deadline.pause()
    try:
        yield
    finally:
        deadline.resume()


def query_param_count(query_string: bytes) -> int:
    return sum(1 for pair in query_string.split(b"&") if pair)


OnStart = Callable[[HTTPResponseStartEvent], None]


def _telling(send: Send, on_start: OnStart) -> Send:
    async def send_started(message: Message) -> None:
        if message["type"] == "http.response.start":
            on_start(message)
        await send(message)

    return send_started


async def run_bounded(
    app: ASGIApp, deadline_s: float, scope: Scope, receive: Receive, send: Send, on_start: OnStart
) -> None:
    """`app` for one HTTP request: refuses too many query parameters, else runs it under the deadline.

    Not a middleware of its own: app/api/requests.py's, the one the app has, calls it, and
    `on_start` is told of the response's start (its own refusals' too) in the one send
    wrapper here. Every middleware layer costs a call per request and a send wrapper per
    message, on requests that take about 0.2 ms in all.
    """
    if (count := query_param_count(scope.get("query_string", b""))) > MAX_QUERY_PARAMS:
        refused = InvalidRequest(f"the URL has {count} query parameters; at most {MAX_QUERY_PARAMS} are allowed")
        await send_error(refused, scope, receive, _telling(send, on_start))
        return
    answered = False

    async def send_and_stop_deadline(message: Message) -> None:
        nonlocal answered
        if message["type"] == "http.response.start" and not answered:
            answered = True
            # A deadline already expired (its cancellation on its way) can no longer be
            # stopped, and the answer goes out regardless.
            deadline.stop()
            on_start(message)
        await send(message)

    async def receive_unbounded() -> ReceiveMessage:
        # deadline_paused without its context manager: every chunk of a body passes here.
        deadline.pause()
        try:
            return await receive()
        finally:
            deadline.resume()

    try:
        async with Deadline(deadline_s) as deadline:
            token = _DEADLINE.set(deadline)
            try:
                await app(scope, receive_unbounded, send_and_stop_deadline)
            finally:
                _DEADLINE.reset(token)
    except TimeoutError:
        if not deadline.expired() or answered:
            raise
        late = StoreUnavailable(f"no answer within JOBTRAIL_REDIS_TIMEOUT_S ({deadline_s:g} s)")
        await send_error(late, scope, receive, _telling(send, on_start))

"""Following an SSE endpoint: exactly once, in order, across dropped connections and restarts.

The loop (one round trip per connection):
1. GET the stream with `Last-Event-ID` = the id of the last event handed out (none at first);
2. hand out each event whose id comes after that id (a copy a server sends twice is dropped),
   and remember the `retry:` hint and any bare `id:` (a skipped entry);
3. stop after the terminal event (`ends`), or at a 204 (the job ended and we have it all);
4. when the connection drops, stalls past `read_timeout`, is closed early by the server
   (with a `retry:` hint, as a draining API does), or is answered 429/5xx or not at all:
   sleep the hint (or `Retry-After`), doubled for each failure in a row up to
   `max_delay_s`, and go to 1. Any other error answer (404: the job was deleted) is raised.

An event, or a connection that lived longer than `max_delay_s`, ends a run of failures.
`give_up_s` bounds how long the API may go without answering at all; `deadline`
(monotonic) ends the whole follow with `on_deadline()`'s exception.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from jobtrail.client.effects import Call, Open, Operation, Read, Reply, Sleep, StreamDropped
from jobtrail.client.errors import ClientError, RateLimited, Unavailable, error_from
from jobtrail.client.sse import Block, SseParser

DEFAULT_RETRY_S = 2.0  # until the server sends its own `retry:` (the API sends one first)

Decode = Callable[[Block], Any]
OnReconnect = Callable[[float, ClientError], None]


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    max_delay_s: float = 30.0
    stall_s: float = 60.0  # the API pings idle streams every 15 s by default
    give_up_s: float | None = 600.0  # None: retry for ever


def id_key(entry_id: str) -> tuple[int, int] | None:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


def comes_after(entry_id: str, last: str | None) -> bool:
    if last is None:
        return True
    new, old = id_key(entry_id), id_key(last)
    return new is None or old is None or new > old


class _Backoff:
    """How long to wait before the next connection, and when to give up."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.retry_s = DEFAULT_RETRY_S  # the server's latest `retry:` hint
        self.failures = 0  # connections in a row that ended without an event
        self.failing_since: float | None = None  # when the API last stopped answering
        self.opened_at: float | None = None

    def connected(self) -> None:
        # The API answers: whatever happens to this connection, it is not down.
        self.failing_since, self.opened_at = None, time.monotonic()

    def progressed(self) -> None:
        self.failures, self.failing_since = 0, None

    def delay(self, failure: RateLimited | Unavailable, now: float) -> float:
        """The wait before reconnecting after `failure`; raises it once the API has been away too long."""
        if self.opened_at is not None and now - self.opened_at > self.policy.max_delay_s:
            self.failures = 0  # a connection that lived (an idle job's, cut by a proxy) starts afresh
        self.opened_at = None
        self.failures += 1
        self.failing_since = self.failing_since or now
        if self.policy.give_up_s is not None and now - self.failing_since > self.policy.give_up_s:
            raise failure
        hint = failure.retry_after if failure.retry_after is not None else self.retry_s
        delay = min(hint * 2.0 ** (self.failures - 1), self.policy.max_delay_s)
        return delay * (1 + random.random() / 4)  # noqa: S311 - jitter, not a secret; spread a crowd of clients reconnecting at once


def follow(
    path: str,
    params: dict[str, str] | None,
    after: str | None,
    decode: Decode,
    *,
    policy: Policy,
    ends: Callable[[Any], bool] = lambda item: False,
    deadline: float | None = None,
    on_deadline: Callable[[], Exception] | None = None,
    on_reconnect: OnReconnect | None = None,
) -> Operation[None]:
    last = after
    backoff = _Backoff(policy)
    while True:
        read_timeout = policy.stall_s
        if deadline is not None:
            read_timeout = max(0.01, min(read_timeout, deadline - time.monotonic()))
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last} if last else {})}
        try:
            call = Call(method="GET", path=path, params=params, headers=headers, timeout=read_timeout)
            reply: Reply = yield Open(call, read_timeout)
            if reply.status == 204:
                return
            if reply.status != 200:
                raise error_from(reply.status, reply.headers, reply.content)  # 429 and 5xx: retried below
            backoff.connected()
            parser = SseParser()
            while True:
                chunk: bytes = yield Read()
                if not chunk:
                    raise StreamDropped(None, "stream_closed", "the server ended the stream early")
                for block in parser.feed(chunk):
                    if block.retry_ms is not None:
                        backoff.retry_s = block.retry_ms / 1000
                    if block.id is not None:
                        if not comes_after(block.id, last):
                            continue  # already handed out (a server may resend around a reconnect)
                        last = block.id
                    if block.data is None:
                        continue  # a hint, or a bare `id:` that moved the resume point
                    item = decode(block)
                    backoff.progressed()
                    yield item
                    if ends(item):
                        return
                if deadline is not None and time.monotonic() >= deadline:
                    raise _deadline(on_deadline)
        except (RateLimited, Unavailable) as failure:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise _deadline(on_deadline) from None
            delay = backoff.delay(failure, now)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - now))
            if on_reconnect is not None:
                on_reconnect(delay, failure)
        yield Sleep(delay)


def _deadline(on_deadline: Callable[[], Exception] | None) -> Exception:
    return on_deadline() if on_deadline else TimeoutError("deadline passed")

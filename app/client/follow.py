"""Following an SSE endpoint: exactly once, in order, across dropped connections and restarts.

The loop (one round trip per connection):
1. GET the stream with `Last-Event-ID` = the id of the last event handed out (none at first);
2. hand out each event whose id comes after that id (a copy a server sends twice is dropped),
   and remember the `retry:` hint and any bare `id:` (a skipped entry);
3. stop after the terminal event (`ends`), or at a 204 (the job ended and we have it all);
4. when the connection drops, stalls past `read_timeout`, is closed early by the server
   (with a `retry:` hint, as a draining API does), or is answered 429/5xx or not at all:
   sleep the hint (or `Retry-After`), doubled for each failure in a row up to
   `max_delay_s`, and go to 1. Any other error answer is raised.

`give_up_s` bounds how long failures in a row may last; `deadline` (monotonic) ends the
whole follow with `on_deadline()`'s exception.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from app.client.effects import Call, Open, Operation, Read, Reply, Sleep, StreamDropped
from app.client.errors import ClientError, RateLimited, Unavailable, error_from
from app.client.sse import Block, SseParser

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
    retry_s = DEFAULT_RETRY_S
    failures = 0
    failing_since: float | None = None
    while True:
        read_timeout = policy.stall_s
        if deadline is not None:
            read_timeout = max(0.01, min(read_timeout, deadline - time.monotonic()))
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last} if last else {})}
        try:
            reply: Reply = yield Open(Call(method="GET", path=path, params=params, headers=headers,
                                           timeout=read_timeout), read_timeout)
            if reply.status == 204:
                return
            if reply.status != 200:
                raise error_from(reply.status, reply.headers, reply.content)  # 429 and 5xx: retried below
            parser = SseParser()
            while True:
                chunk: bytes = yield Read()
                if not chunk:
                    raise StreamDropped(None, "stream_closed", "the server closed the stream before the job ended")
                for block in parser.feed(chunk):
                    if block.retry_ms is not None:
                        retry_s = block.retry_ms / 1000
                    if block.id is not None and not comes_after(block.id, last):
                        continue  # already handed out (a server may resend around a reconnect)
                    if block.id is not None:
                        last = block.id
                    if block.data is None:
                        continue
                    item = decode(block)
                    failures, failing_since = 0, None
                    yield item
                    if ends(item):
                        return
                if deadline is not None and time.monotonic() >= deadline:
                    raise _deadline(on_deadline)
        except (RateLimited, Unavailable) as error:
            failure: ClientError = error
            hint = error.retry_after
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise _deadline(on_deadline)
        failures += 1
        failing_since = failing_since or now
        if policy.give_up_s is not None and now - failing_since > policy.give_up_s:
            raise failure
        delay = min((hint if hint is not None else retry_s) * 2 ** (failures - 1), policy.max_delay_s)
        delay *= 1 + random.random() / 4  # spread a crowd of clients reconnecting at once
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - now))
        if on_reconnect is not None:
            on_reconnect(delay, failure)
        yield Sleep(delay)


def _deadline(on_deadline: Callable[[], Exception] | None) -> Exception:
    return on_deadline() if on_deadline else TimeoutError("deadline passed")

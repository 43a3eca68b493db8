"""A job's replay read a page at a time as XRANGE's reply comes from hiredis, with no per-entry work in redis-py.

redis-py turns each XRANGE reply into (id, dict) tuples in Python (its response callback):
1.7 to 3.4 µs an entry against 1.0 to 1.4 for hiredis's parse alone, measured over 100,000
entries on a busy 2-core machine, and about as much as framing an entry once the framing
takes the raw fields (app/sse_frames.py).
`raw_client` is the events client with that callback left out for XRANGE alone: the same
pool, retries, timeouts and connection class (BufferedReplies, app/store.py), so a read
behaves as every other read of the process, only its reply stays [id, [field, value, ...]].

A Cluster client parses replies per node, so it keeps redis-py's callback; the decoders of
a page take both forms.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from redis.asyncio import Redis

from jobtrail.offsets import is_after

T = TypeVar("T")

# An XRANGE entry as hiredis gives it, its fields a flat [name, value, ...] list, or as redis-py's
# callback makes it (a dict), which a Cluster client's read still is.
RawEntry = tuple[str, list[str] | dict[str, str]]


def entry_fields(fields: list[str] | dict[str, str]) -> dict[str, str]:
    """A raw entry's fields as a dict, as redis-py's callback makes them (a repeated name: its last value)."""
    if type(fields) is list:
        return dict(zip(fields[::2], fields[1::2], strict=True))
    return fields  # type: ignore[return-value]

_RAW: WeakKeyDictionary[Redis, Redis] = WeakKeyDictionary()


def raw_client(redis: Any) -> Any:
    """`redis`'s twin (made once) whose XRANGE answers as hiredis parsed it; a Cluster client itself."""
    if not isinstance(redis, Redis) or redis.single_connection_client or "XRANGE" not in redis.response_callbacks:
        return redis
    raw = _RAW.get(redis)
    if raw is None:
        raw = copy.copy(redis)  # the same pool and settings: nothing is opened or closed for it
        callbacks = type(redis.response_callbacks)(redis.response_callbacks)
        del callbacks["XRANGE"]
        raw.response_callbacks = callbacks
        _RAW[redis] = raw
    return raw


async def raw_pages(
    redis: Any, stream: str, decode: Callable[[list[RawEntry]], T], *, after: str, page_size: int, until: str = "+"
) -> AsyncIterator[T]:
    """The stream's entries after `after` up to `until`, a page at a time (one XRANGE each), each page `decode`d.

    A full page's successor is asked for before the page is decoded and handed over:
    Redis serializes it while the reader encodes and writes this one, so a long replay
    waits for Redis about once instead of once a page.
    """
    if until != "+" and not is_after(until, after):
        yield decode([])  # nothing between them to read
        return
    client = raw_client(redis)
    entries = await client.xrange(stream, min=f"({after}", max=until, count=page_size)
    ahead: asyncio.Future[Any] | None = None
    try:
        while True:
            if len(entries) >= page_size:
                ahead = asyncio.ensure_future(
                    client.xrange(stream, min=f"({entries[-1][0]}", max=until, count=page_size))
            yield decode(entries)
            if ahead is None:
                return
            entries, ahead = await ahead, None
    finally:
        if ahead is not None:
            # The reader left mid-replay: the page read ahead is of no use (nor its error).
            ahead.cancel()
            ahead.add_done_callback(lambda f: f.cancelled() or f.exception())

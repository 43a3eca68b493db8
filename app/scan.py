"""Walking every key of a pattern, on whichever topology: SCAN in batches, on every node that holds keys.

A manual `SCAN cursor` loop sees one server only; on a Cluster each primary has its own
keyspace and cursor. redis-py's `scan_iter` walks every primary of a RedisCluster (one cursor
per node, each to its end) and the one server otherwise, so every walk goes through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


async def scan_batches(redis: Any, match: str, count: int, type_: str | None = None) -> AsyncIterator[list[str]]:
    """Every key matching `match` (of Redis type `type_`, if given), in lists of up to `count`.

    About one SCAN round trip per batch per node. Like SCAN, it may return a key twice, and
    a key written during the walk may or may not be in it.
    """
    batch: list[str] = []
    async for key in redis.scan_iter(match=match, count=count, _type=type_):
        batch.append(key)
        if len(batch) >= count:
            yield batch
            batch = []
    if batch:
        yield batch

"""Frames built once per item for all the connections that send it (SSE bytes, /ws JSON).

The hub decodes each new entry once and offers the same item to every subscriber of its
stream; a job with 1,000 SSE clients then encodes each event once, not 1,000 times. Items
are msgspec Structs (not weak-referenceable), so the cache holds each item it keys by
identity, and the identity check makes a recycled `id()` a miss, never a wrong frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Items remembered: far more than are in flight at once on one process, small in memory.
CACHED_ITEMS = 4096


class FrameCache:
    """The frame of each recent item per transport (`kind`), the oldest forgotten first."""

    __slots__ = ("_frames", "size")

    def __init__(self, size: int = CACHED_ITEMS) -> None:
        self.size = size
        self._frames: dict[tuple[int, str], tuple[Any, bytes]] = {}

    def frame(self, item: Any, kind: str, build: Callable[[Any], bytes]) -> bytes:
        key = (id(item), kind)
        hit = self._frames.get(key)
        if hit is not None and hit[0] is item:
            return hit[1]
        built = build(item)
        self._frames[key] = (item, built)
        if len(self._frames) > self.size:
            del self._frames[next(iter(self._frames))]
        return built

    def __len__(self) -> int:
        return len(self._frames)


# One per process: the SSE routes and every /ws session share it.
FRAMES = FrameCache()

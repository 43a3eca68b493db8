"""Frames built once per item for all the connections that send it (SSE bytes, /ws JSON).

The hub decodes each new entry once and offers the same item to every subscriber of its
stream; a job with 1,000 SSE clients then encodes each event once, not 1,000 times. Items
are msgspec Structs (not weak-referenceable), so the cache holds each item it keys by
identity, and the identity check makes a recycled `id()` a miss, never a wrong frame.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# Items remembered: far more than are in flight at once on one process, small in memory.
CACHED_ITEMS = 4096


class FrameCache:
    """The frame of each recent item per transport (`kind`), the oldest forgotten first."""

    __slots__ = ("_frames", "size")

    def __init__(self, size: int = CACHED_ITEMS) -> None:
        self.size = size
        # An OrderedDict, not a dict: evicting a dict's oldest key (`next(iter(d))`) walks
        # the slots its earlier evictions left empty, up to the whole table once it is full;
        # py-spy had that walk at 4 to 9% of an API process in W1, whose every event is cached.
        self._frames: OrderedDict[tuple[int, str], tuple[Any, bytes]] = OrderedDict()

    def frame(self, item: Any, kind: str, build: Callable[[Any], bytes]) -> bytes:
        key = (id(item), kind)
        hit = self._frames.get(key)
        if hit is not None and hit[0] is item:
            return hit[1]
        built = build(item)
        self._frames[key] = (item, built)
        if len(self._frames) > self.size:
            self._frames.popitem(last=False)
        return built

    def __len__(self) -> int:
        return len(self._frames)


# One per process: the SSE routes and every /ws session share it.
FRAMES = FrameCache()

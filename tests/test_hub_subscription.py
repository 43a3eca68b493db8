"""A hub subscription's `get`: stopping the reader always stops it, whatever arrives at that moment."""

from __future__ import annotations

import asyncio

import pytest

from jobtrail.hub import Subscription


async def test_a_cancelled_get_stays_cancelled_when_an_entry_arrives_at_the_same_moment():
    sub = Subscription("stream", 10)
    waiting = asyncio.create_task(sub.get(timeout=5))
    await asyncio.sleep(0)  # parked in the queue's get
    sub.offer("entry")  # wakes the get for the next turn of the loop ...
    waiting.cancel()  # ... in which the cancel must still win
    with pytest.raises(asyncio.CancelledError):
        await waiting

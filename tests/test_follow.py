"""A follow's live tail (app/follow.py): a busy stream's entries go out in fewer, fuller batches."""

from __future__ import annotations

import asyncio

import pytest

from jobtrail.follow import LINGER_S, _lingered
from jobtrail.hub import FELL_BEHIND, Subscription, SubscriptionClosed


async def test_entries_offered_within_the_linger_after_a_batch_join_the_next_batch():
    sub = Subscription("stream", 10)
    loop = asyncio.get_running_loop()
    lingering = asyncio.create_task(_lingered(sub, ["a"], sent_at=loop.time()))
    await asyncio.sleep(0)
    sub.offer("b")
    sub.offer("c")
    assert await lingering == ["a", "b", "c"]
    assert sub.take() == []


async def test_a_tail_quieter_than_the_linger_is_not_held_back():
    sub = Subscription("stream", 10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await _lingered(sub, ["a"], sent_at=began - 2 * LINGER_S) == ["a"]
    assert loop.time() - began < LINGER_S


async def test_a_subscription_closed_while_lingering_keeps_what_was_taken_and_ends_at_the_next_get():
    sub = Subscription("stream", 10)
    loop = asyncio.get_running_loop()
    lingering = asyncio.create_task(_lingered(sub, ["a"], sent_at=loop.time()))
    await asyncio.sleep(0)
    sub.offer("b")
    sub.close(FELL_BEHIND)  # drops "b": the client resumes after "a", the last it gets
    assert await lingering == ["a"]
    with pytest.raises(SubscriptionClosed) as closed:
        await sub.get_all(timeout=1)
    assert closed.value.reason == FELL_BEHIND

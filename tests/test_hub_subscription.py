"""A hub subscription's `get`: stopping the reader always stops it, whatever arrives at that moment."""

from __future__ import annotations

import asyncio

import pytest

from jobtrail.hub import FELL_BEHIND, Subscription, SubscriptionClosed


async def test_a_cancelled_get_stays_cancelled_when_an_entry_arrives_at_the_same_moment():
    sub = Subscription("stream", 10)
    waiting = asyncio.create_task(sub.get(timeout=5))
    await asyncio.sleep(0)  # parked in the queue's get
    sub.offer("entry")  # wakes the get for the next turn of the loop ...
    waiting.cancel()  # ... in which the cancel must still win
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_entries_queued_while_the_reader_was_busy_come_in_one_get_all():
    sub = Subscription("stream", 10)
    for n in range(3):
        assert sub.offer(n)
    assert await sub.get_all(timeout=5) == [0, 1, 2]
    waiting = asyncio.create_task(sub.get_all(timeout=5))
    await asyncio.sleep(0)
    sub.offer(3)
    sub.offer(4)  # before the woken reader runs: it takes both
    assert await waiting == [3, 4]


async def test_an_idle_reader_still_times_out_after_many_waits_that_an_entry_ended():
    sub = Subscription("stream", 10)
    for n in range(50):
        waiting = asyncio.create_task(sub.get(timeout=0.2))
        await asyncio.sleep(0)
        sub.offer(n)
        assert await waiting == n
    async with asyncio.timeout(5):
        assert await sub.get(timeout=0.2) is None
        assert await sub.get_all(timeout=0.2) == []


async def test_a_wait_shorter_than_the_one_before_times_out_on_its_own_deadline():
    sub = Subscription("stream", 10)
    waiting = asyncio.create_task(sub.get(timeout=3600))
    await asyncio.sleep(0)
    sub.offer("entry")
    assert await waiting == "entry"
    async with asyncio.timeout(5):
        assert await sub.get(timeout=0.05) is None


async def test_closing_wakes_the_reader_and_drops_what_was_queued():
    sub = Subscription("stream", 10)
    waiting = asyncio.create_task(sub.get_all(timeout=3600))
    await asyncio.sleep(0)
    sub.close(FELL_BEHIND)
    with pytest.raises(SubscriptionClosed):
        await waiting
    assert not sub.offer("late"), "a closed subscription takes nothing more"
    with pytest.raises(SubscriptionClosed):
        await sub.get(timeout=5)


async def test_a_full_queue_closes_the_subscription_before_the_reader_sees_a_hole():
    sub = Subscription("stream", 3)
    assert all(sub.offer(n) for n in range(3))
    assert not sub.offer(3)
    with pytest.raises(SubscriptionClosed) as closed:
        await sub.get_all(timeout=5)
    assert closed.value.reason == FELL_BEHIND

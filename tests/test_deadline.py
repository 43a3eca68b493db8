"""A request's deadline (app/api/deadline.py) counts what `asyncio.timeout` paused by reschedule counted.

Margins are wide (tenths of a second on deadlines of half a second): the machine is shared.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from jobtrail.api.deadline import Deadline


async def test_a_block_that_outlasts_its_deadline_is_cancelled_and_raises_timeout_error():
    with pytest.raises(TimeoutError):
        async with Deadline(0.1) as deadline:
            await asyncio.sleep(5)
    assert deadline.expired()


async def test_a_block_done_in_time_runs_to_its_end_and_leaves_no_timer_behind():
    async with Deadline(0.5) as deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.7)  # a timer left armed would cancel this task here
    assert not deadline.expired()


async def test_a_pause_longer_than_the_deadline_is_not_counted_and_the_deadline_still_ends_after_it():
    with pytest.raises(TimeoutError):
        async with Deadline(0.3) as deadline:
            deadline.pause()
            await asyncio.sleep(0.6)  # the timer fires in here, and waits for the pause's end
            deadline.resume()
            await asyncio.sleep(0.05)
            assert not deadline.expired()
            await asyncio.sleep(5)


async def test_time_paused_earlier_moves_the_end_when_the_timer_fires():
    async with Deadline(0.5) as deadline:
        deadline.pause()
        await asyncio.sleep(0.4)
        deadline.resume()
        await asyncio.sleep(0.2)  # 0.6 s since the start, 0.2 s of it counted: the timer fires and waits on
    assert not deadline.expired()
    with pytest.raises(TimeoutError):
        async with Deadline(0.5) as deadline:
            deadline.pause()
            await asyncio.sleep(0.4)
            deadline.resume()
            await asyncio.sleep(5)


async def test_nested_pauses_count_as_one_until_the_outer_one_ends():
    async with Deadline(0.3) as deadline:
        deadline.pause()
        deadline.pause()
        await asyncio.sleep(0.2)
        deadline.resume()
        await asyncio.sleep(0.3)
        deadline.resume()
        await asyncio.sleep(0.05)
    assert not deadline.expired()


async def test_a_stopped_deadline_never_expires():
    async with Deadline(0.1) as deadline:
        deadline.stop()
        await asyncio.sleep(0.3)
    assert not deadline.expired()


async def test_a_cancel_from_elsewhere_stays_a_cancellation():
    async def guarded() -> None:
        async with Deadline(5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_submission_whose_body_arrives_slower_than_the_deadline_is_still_answered(settings, start_api):
    # Waiting for the client's body is the client's time, not the request's (app/api/bounds.py).
    api = await start_api(msgspec.structs.replace(settings, redis_timeout_s=0.3))
    body = b'{"kind": "demo", "params": {}}'
    head = f"POST /jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", int(api.url.rsplit(":", 1)[1]))
    try:
        writer.write(head.encode() + body[:5])
        await writer.drain()
        await asyncio.sleep(0.8)
        writer.write(body[5:])
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"202", status_line


async def _round_trips_in_wait_for(count: list[int], for_s: float) -> None:
    # redis-py writes each command under asyncio.wait_for, whose Python 3.11 version returns
    # the result, and drops a cancellation, when the cancel lands just as the awaited
    # write finishes (cpython gh-86296; 3.12 rebuilt wait_for on asyncio.timeout).
    loop = asyncio.get_running_loop()
    end = loop.time() + for_s
    while loop.time() < end:  # a cancellation dropped for good ends the block normally
        await asyncio.wait_for(asyncio.sleep(0), 10)
        count[0] += 1


async def test_a_cancellation_that_the_awaited_code_drops_is_sent_again_until_the_block_ends():
    # This loop spends most of its turns in wait_for's window (a cancel is dropped ~9 times
    # in 10), so each deadline here sees several dropped, and the old Deadline failed on
    # the first; a block still running after 10 s is ~200 cancellations dropped in a row.
    for _ in range(5):
        count = [0]
        with pytest.raises(TimeoutError):
            async with Deadline(0.01) as deadline:
                await _round_trips_in_wait_for(count, 10.0)
        assert count[0] > 0
    assert deadline.expired()
    assert asyncio.current_task().cancelling() == 0, "every cancellation the deadline sent was taken back"  # type: ignore[union-attr]

"""SharedPipeline: concurrent callers' commands in one round trip, each caller with its own replies and errors."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ConnectionError

from jobtrail.batching import SharedPipeline


async def test_callers_of_one_moment_share_a_round_trip_and_each_gets_its_own_replies(redis_client, keys):
    shared = SharedPipeline(redis_client)
    sent = []
    execute = type(redis_client.pipeline()).execute

    async def counting_execute(pipe, *args, **kwargs):
        sent.append(len(pipe))
        return await execute(pipe, *args, **kwargs)

    def caller(n: int):
        def queue(pipe) -> None:
            pipe.set(keys.job(f"b{n}"), n)
            pipe.incrby(keys.job(f"b{n}:count"), n)
        return queue

    type(redis_client.pipeline()).execute = counting_execute
    try:
        replies = await asyncio.gather(*(shared.run(caller(n)) for n in range(1, 21)))
    finally:
        type(redis_client.pipeline()).execute = execute

    assert replies == [[True, n] for n in range(1, 21)]
    assert sent == [40], "twenty callers, one round trip of their forty commands"


async def test_a_caller_whose_commands_fail_to_queue_fails_alone(redis_client, keys):
    shared = SharedPipeline(redis_client)

    def good(n: int):
        return lambda pipe: pipe.incrby(keys.job(f"g{n}"), n)

    def broken(pipe) -> None:
        pipe.set(keys.job("half"), "queued before the error")
        raise RuntimeError("this caller's own bug")

    results = await asyncio.gather(shared.run(good(1)), shared.run(broken), shared.run(good(2)),
                                   return_exceptions=True)

    assert results[0] == [1] and results[2] == [2]
    assert isinstance(results[1], RuntimeError)
    assert await redis_client.get(keys.job("half")) is None, "nothing of the failed caller was sent"


async def test_a_failed_round_trip_raises_for_every_caller_of_its_batch(keys):
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    shared = SharedPipeline(unreachable)
    try:
        results = await asyncio.gather(*(shared.run(lambda pipe: pipe.get(keys.job("x"))) for _ in range(3)),
                                       return_exceptions=True)
    finally:
        await unreachable.aclose()
    assert all(isinstance(r, ConnectionError) for r in results), results


async def test_with_one_round_trip_in_flight_the_callers_meanwhile_go_together_in_the_next(redis_client, keys):
    # A worker's deliveries reach the pipeline a few loop turns apart, not in one turn.
    shared = SharedPipeline(redis_client, in_flight=1)
    sent = []
    execute = type(redis_client.pipeline()).execute

    async def counting_execute(pipe, *args, **kwargs):
        sent.append(len(pipe))
        return await execute(pipe, *args, **kwargs)

    type(redis_client.pipeline()).execute = counting_execute
    try:
        # The first round trip stays out for 0.3 s (a BLPOP that times out).
        slow = asyncio.create_task(shared.run(lambda pipe: pipe.blpop([keys.job("empty")], timeout=0.3)))
        await asyncio.sleep(0.05)
        callers = []
        for n in range(5):
            callers.append(asyncio.create_task(shared.run(lambda pipe, n=n: pipe.incrby(keys.job("later"), n))))
            await asyncio.sleep(0)  # each in a loop turn of its own
        cancelled = asyncio.create_task(shared.run(lambda pipe: pipe.set(keys.job("cancelled"), 1)))
        await asyncio.sleep(0)
        cancelled.cancel()
        replies = await asyncio.gather(*callers)
        assert await slow == [None]
    finally:
        type(redis_client.pipeline()).execute = execute

    assert sent == [1, 5], "the slow one alone, then the five that came while it was out, together"
    assert sorted(r[0] for r in replies) == [0, 1, 3, 6, 10]
    assert await redis_client.get(keys.job("cancelled")) is None, "cancelled before its batch went: nothing sent"


async def test_a_lone_caller_goes_at_once_with_nothing_in_flight(redis_client, keys):
    shared = SharedPipeline(redis_client, in_flight=1)
    for n in range(3):
        assert await asyncio.wait_for(shared.run(lambda pipe, n=n: pipe.set(keys.job(f"alone{n}"), n)), 1) == [True]


async def test_with_linger_turns_callers_a_few_loop_turns_apart_still_share_one_round_trip(redis_client, keys):
    # The callers a round trip wakes queue their next commands a few turns later (a task's wake-up, a task it starts).
    sent = []
    execute = type(redis_client.pipeline()).execute

    async def counting_execute(pipe, *args, **kwargs):
        sent.append(len(pipe))
        return await execute(pipe, *args, **kwargs)

    async def caller(n: int) -> list[object]:
        for _ in range(n):
            await asyncio.sleep(0)
        return await shared.run(lambda pipe: pipe.incrby(keys.job("lingered"), n))

    type(redis_client.pipeline()).execute = counting_execute
    try:
        shared = SharedPipeline(redis_client, in_flight=1, linger_turns=4)
        lingered = await asyncio.gather(*(caller(n) for n in range(4)))
        shared = SharedPipeline(redis_client, in_flight=1)
        at_once = await asyncio.gather(*(caller(n) for n in range(4)))
    finally:
        type(redis_client.pipeline()).execute = execute

    assert sorted(r[0] for r in lingered) == [0, 1, 3, 6] and len(at_once) == 4
    assert sent[0] == 4, "four callers up to three turns apart, in one round trip"
    assert len(sent) > 2, "without lingering, the first caller's round trip left before the others came"

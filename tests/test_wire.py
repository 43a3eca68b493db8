"""Wire: the worker's shared round trips on one held connection, replying exactly as redis-py's pipeline does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from jobtrail.config import Settings
from jobtrail.store import Store
from jobtrail.workers.wire import Wire


@pytest.fixture
async def pooled(settings: Settings) -> AsyncIterator[Any]:
    """A client as the worker's: app/store.py's pool, its connections packing with hiredis."""
    client = Store(settings, role="test").pooled()
    yield client
    await client.aclose()


def _mixed(keys: Any) -> Any:
    job, stream, live = keys.job("w1"), keys.events("w1"), keys.live()

    def queue(pipe: Any) -> None:
        pipe.hset(job, mapping={"state": "pending", "attempt": "0"})
        pipe.hgetall(job)
        pipe.pexpiretime(job)
        pipe.zadd(live, {"w1": 5})
        pipe.zscore(live, "w1")
        pipe.execute_command("EVALSHA", "0" * 40, 0)  # NOSCRIPT, an error as a value
        pipe.incr(job)  # WRONGTYPE, another
        pipe.set(keys.job("w1:flag"), "x", nx=True, px=60_000)
        pipe.set(keys.job("w1:flag"), "x", nx=True, px=60_000)
        pipe.xadd(stream, {"a": "1"})
        pipe.xlen(stream)
        pipe.client_getname()  # a command of two words, which hiredis alone would send as one
        pipe.delete(job, stream, live, keys.job("w1:flag"))

    return queue


def _comparable(replies: list[Any]) -> list[Any]:
    out = []
    for reply in replies:
        if isinstance(reply, Exception):
            out.append((type(reply), str(reply)))
        elif isinstance(reply, str) and reply.count("-") == 1 and reply.split("-")[0].isdigit():
            out.append("<entry id>")
        else:
            out.append(reply)
    return out


async def test_a_round_trip_replies_as_redis_pys_own_pipeline_errors_and_callbacks_included(pooled, keys):
    wire = Wire(pooled)
    assert wire.lean
    async with pooled.pipeline(transaction=False) as pipe:
        _mixed(keys)(pipe)
        expected = await pipe.execute(raise_on_error=False)
    async with wire.pipeline() as pipe:
        _mixed(keys)(pipe)
        got = await pipe.execute(raise_on_error=False)

    assert _comparable(got) == _comparable(expected)
    assert isinstance(got[5], NoScriptError) and isinstance(got[6], ResponseError)
    assert got[1] == {"state": "pending", "attempt": "0"} and got[4] == 5.0 and got[7] is True and got[8] is None


async def test_round_trips_that_follow_one_another_hold_one_connection_and_give_it_back_when_idle(
    pooled, settings, keys
):
    pool = pooled.connection_pool
    wire = Wire(pooled)
    for n in range(20):
        async with wire.pipeline() as pipe:
            pipe.incr(keys.job("count"))
            assert (await pipe.execute()) == [n + 1]
        assert len(pool._in_use_connections) == 1, "held between round trips"
    await asyncio.sleep(wire.IDLE_S * 4)
    assert len(pool._in_use_connections) == 0, "back in the pool once idle"
    clients = await pooled.client_list()
    assert len([c for c in clients if c.get("name") == Store(settings, role="test").client_name]) == 1


async def test_a_round_trip_cancelled_mid_read_leaves_no_reply_behind_for_the_next(pooled, keys):
    wire = Wire(pooled)

    async def slow() -> list[Any]:
        async with wire.pipeline() as pipe:
            pipe.blpop([keys.job("nothing")], timeout=0.3)  # the server answers in 0.3 s
            pipe.set(keys.job("late"), "written")
            return await pipe.execute()

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with wire.pipeline() as pipe:
        pipe.echo("mine")
        pipe.echo("mine too")
        assert (await pipe.execute()) == ["mine", "mine too"]


async def test_a_connection_killed_between_round_trips_is_made_again_by_the_one_quick_retry(pooled, keys):
    wire = Wire(pooled)
    async with wire.pipeline() as pipe:
        pipe.client_id()
        (first_id,) = await pipe.execute()
    await pooled.client_kill_filter(_id=first_id)
    async with wire.pipeline() as pipe:
        pipe.client_id()
        pipe.set(keys.job("after-kill"), "1")
        second_id, written = await pipe.execute()

    assert second_id != first_id and written is True


async def test_sentinel_cluster_embedded_and_plain_clients_keep_redis_pys_own_pipeline(redis_url) -> None:
    sentinel = Store(Settings(redis_url="redis+sentinel://127.0.0.1:1/jobtrail"), role="test").pooled()
    embedded = Store(Settings(redis_url=None), role="test").pooled()
    plain = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert not Wire(sentinel).lean
        assert not Wire(embedded).lean
        assert not Wire(plain).lean
        assert not Wire(object()).lean  # a RedisCluster has no connection pool of its own
    finally:
        await plain.aclose()

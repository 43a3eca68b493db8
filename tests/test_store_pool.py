"""The pooled client of one server: a few connections serve many callers, who wait their turn rather than fail."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from redis.asyncio import Redis, connection
from redis.exceptions import NoScriptError, ResponseError

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.store import Store, WaitingPool, pack_with_hiredis


async def test_the_default_pool_is_small_and_a_crowd_of_callers_waits_for_it_without_errors(
    settings: Settings, keys: Keys, redis_client
):
    store = Store(msgspec.structs.replace(settings, redis_pool_size=0), role="pooltest")
    client = store.pooled()
    pool = client.connection_pool
    assert isinstance(pool, WaitingPool) and pool.max_connections == Store.POOL_SIZE
    most_in_use = 0

    async def one(n: int) -> int:
        nonlocal most_in_use
        # A pipeline holds its connection across an await: callers really overlap.
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(keys.job(f"pool{n % 7}"))
            pipe.expire(keys.job(f"pool{n % 7}"), 60)
            count, _ = await pipe.execute()
        most_in_use = max(most_in_use, len(pool._in_use_connections))
        return int(count)

    try:
        results = await asyncio.gather(*(one(n) for n in range(400)))
        assert len(results) == 400
        assert sum([int(await redis_client.get(keys.job(f"pool{k}"))) for k in range(7)]) == 400
        names = [c for c in await redis_client.client_list() if c.get("name") == store.client_name]
        assert 1 <= len(names) <= Store.POOL_SIZE
        assert most_in_use <= Store.POOL_SIZE
    finally:
        await client.aclose()



async def test_a_pipelines_replies_read_from_the_buffer_are_what_redis_py_reads_and_arm_one_timer(
    settings: Settings, keys: Keys, redis_client, monkeypatch
):
    armed = 0
    real_timeout = connection.async_timeout

    def counted(*args: object) -> object:
        nonlocal armed
        armed += 1
        return real_timeout(*args)

    client = Store(settings, role="pooltest").pooled()
    key, text = keys.job("buffered"), keys.job("buffered-text")

    def queue(pipe) -> None:
        pipe.incr(key)
        pipe.hset(text, mapping={"a": "1", "b": "é"})
        pipe.hgetall(text)
        pipe.incr(text)  # WRONGTYPE: an error reply, as a value
        pipe.evalsha("0" * 40, 0)  # NOSCRIPT
        pipe.get(keys.job("missing"))

    try:
        await client.ping()  # connected: the pipeline below measures its reads alone
        monkeypatch.setattr(connection, "async_timeout", counted)
        async with client.pipeline(transaction=False) as pipe:
            queue(pipe)
            replies = await pipe.execute(raise_on_error=False)
        monkeypatch.undo()
        async with redis_client.pipeline(transaction=False) as pipe:  # redis-py's own connections
            queue(pipe)
            expected = await pipe.execute(raise_on_error=False)
        assert (replies[0], replies[1]) == (1, 2) and (expected[0], expected[1]) == (2, 0)
        assert replies[2] == expected[2] == {"a": "1", "b": "é"}
        assert type(replies[3]) is type(expected[3]) is ResponseError and str(replies[3]) == str(expected[3])
        assert isinstance(replies[4], NoScriptError) and isinstance(expected[4], NoScriptError)
        assert replies[5] is None and expected[5] is None
        assert armed <= 2  # the first reply waits under a timeout; those already read with it do not
    finally:
        await client.aclose()


async def test_an_error_reply_read_from_the_buffer_still_passes_through_the_connection_classes_own_read(
    settings: Settings, keys: Keys
):
    # As a Sentinel connection's does: it turns READONLY (a demoted master) into a reconnect.
    seen: list[ResponseError] = []

    class Watching(connection.Connection):
        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().read_response(*args, **kwargs)
            except ResponseError as exc:
                seen.append(exc)
                raise

    url = settings.redis_url
    pool = connection.ConnectionPool.from_url(url, connection_class=Watching, decode_responses=True)
    pack_with_hiredis(pool)
    client = Redis(connection_pool=pool)
    key = keys.job("buffered-error")
    try:
        await client.ping()
        seen.clear()  # the connection's own handshake asks for what an older Redis refuses
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(key, "a", "1")
            pipe.incr(key)  # WRONGTYPE
            pipe.incr(key)
            replies = await pipe.execute(raise_on_error=False)
        assert replies[0] == 1 and all(isinstance(reply, ResponseError) for reply in replies[1:])
        assert [str(exc) for exc in seen] == [str(replies[1]), str(replies[2])]
    finally:
        await client.aclose()

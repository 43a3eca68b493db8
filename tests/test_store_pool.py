"""The pooled client of one server: a few connections serve many callers, who wait their turn rather than fail."""

from __future__ import annotations

import asyncio

import msgspec

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.store import Store, WaitingPool


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


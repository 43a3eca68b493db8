"""The client's event stream across a Redis outage, on a throwaway redis-server.

While Redis is down the API ends open streams with a `retry:` hint and answers new
ones 503 with Retry-After; the client keeps reconnecting, and once Redis is back it
resumes where it was, each event once.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as aioredis

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, SucceededData
from jobtrail.keys import Keys
from tests.support.flavors import Flavor
from tests.support.jobs import progress, running_job, stream_ids
from tests.support.redis_server import RedisServer


@pytest.fixture
def settings(settings: Settings, durable_redis: RedisServer) -> Settings:
    return msgspec.structs.replace(settings, redis_url=durable_redis.url, redis_timeout_s=1.0)


@pytest.fixture(params=["sync", "async"])
async def jt(request, start_api, settings):
    api = await start_api(settings)
    flavor = Flavor(request.param, api.url, max_reconnect_delay_s=2.0)
    yield flavor
    await flavor.close()


async def test_events_wait_out_a_redis_outage_and_resume_exactly(jt, settings, durable_redis):
    keys = Keys(settings.prefix)

    def event_log() -> tuple[aioredis.Redis, EventLog]:
        redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        return redis, EventLog(redis, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)

    redis, events = event_log()
    await running_job(events, "outage")
    causes: list[str] = []
    reader = asyncio.create_task(
        jt.collect("events", "outage", on_reconnect=lambda _, why: causes.append(why.code))
    )
    await progress(events, "outage", 1, 3)
    await asyncio.sleep(0.5)

    durable_redis.kill()
    await asyncio.sleep(4)  # long enough for reconnects to meet the outage
    durable_redis.start()  # on its own append-only file: every event is still there
    await redis.aclose()
    redis, events = event_log()  # this test's own connections broke with it
    await progress(events, "outage", 2, 3)
    await progress(events, "outage", 3, 3)
    await events.append("outage", EventType.SUCCEEDED, SucceededData(result=None))
    got = await asyncio.wait_for(reader, 60)

    assert [e.id for e in got] == await stream_ids(redis, keys, "outage")
    # A reconnect during the outage is told to retry (a short 200 stream with a `retry:`
    # hint, which EventSource survives too), so the client meets closes, not a 503.
    assert len(causes) >= 2 and set(causes) <= {"stream_closed", "store_unavailable"}, causes
    await redis.aclose()

"""A follow's opening read (app/opening.py): state, gap and first page in one round trip, and resumption still exact."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from jobtrail.errors import JobNotFound
from jobtrail.events import Event, EventType, SubmittedData, SucceededData
from jobtrail.follow import End, EndReason, follow_job
from jobtrail.offsets import BEGINNING
from jobtrail.opening import Opening
from jobtrail.services import Services
from tests.support.jobs import finished_job, progress, running_job, stream_ids

PING_S = 5.0


@pytest.fixture
async def hub_running(services: Services) -> AsyncIterator[Services]:
    services.hub.start()
    yield services
    await services.hub.stop()


async def opened(services: Services, job_id: str, offset: str = BEGINNING, page_size: int = 1000) -> Opening:
    return await services.opener.open(job_id, None, offset, page_size, sees_all=True, shared=services.reads.run)


async def followed(services: Services, opening: Opening, offset: str = BEGINNING) -> list[str]:
    """The ids a follow from `offset` yields, through its End (which must be the terminal one)."""
    got: list[str] = []
    follow = follow_job(services.events, services.hub, opening.job, offset, gap=False, ping_s=PING_S,
                        first=opening.page)
    async with contextlib.aclosing(follow) as batches, asyncio.timeout(10):
        async for batch in batches:
            for item in batch.items:
                if isinstance(item, Event):
                    got.append(item.id)
                elif isinstance(item, End):
                    assert item.reason is EndReason.TERMINAL, item
                    return got
    raise AssertionError("the follow ended without an End")


async def test_the_opening_holds_the_state_and_the_stream_after_the_offset(services, redis_client, keys):
    await finished_job(services.events, "done")
    all_ids = await stream_ids(redis_client, keys, "done")

    opening = await opened(services, "done", offset=all_ids[2])

    assert opening.job.last_event_id == all_ids[-1] and opening.job.terminal
    assert [entry_id for entry_id, _ in opening.page.entries] == all_ids[3:]
    assert opening.page.reach == all_ids[-1] and not opening.page.full
    assert opening.deleted_through == await services.events.max_deleted_id("done") == BEGINNING


async def test_another_tenants_job_opens_as_a_missing_one(services):
    await services.events.append(
        "theirs", EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1, tenant="acme"))

    for job_id in ("theirs", "nosuch"):
        with pytest.raises(JobNotFound):
            await services.opener.open(job_id, "other", BEGINNING, 1000, sees_all=False, shared=services.reads.run)
    mine = await services.opener.open("theirs", "acme", BEGINNING, 1000, sees_all=False)
    assert mine.job.tenant == "acme"


async def test_the_opening_gap_is_max_deleted_id_after_a_trim(services, redis_client, keys):
    await finished_job(services.events, "trimmed")
    await redis_client.xtrim(keys.events("trimmed"), maxlen=3, approximate=False)

    opening = await opened(services, "trimmed")

    assert opening.deleted_through == await services.events.max_deleted_id("trimmed") != BEGINNING


async def test_a_follow_reads_what_lies_between_its_first_page_and_a_hub_cursor_further_on(
    hub_running, redis_client, keys
):
    services = hub_running
    events = services.events
    await running_job(events, "j")
    opening = await opened(services, "j")
    # Meanwhile the hub, watching the job for another follower, reads past the page's reach.
    stream = keys.events("j")
    other = await services.hub.subscribe(stream, after=opening.job.last_event_id)
    try:
        for step in range(1, 4):
            await progress(events, "j", step, 3)
        seen: list[Event] = []
        async with asyncio.timeout(5):
            while len(seen) < 3:
                seen += other.take()
                await asyncio.sleep(0.02)
        await events.append("j", EventType.SUCCEEDED, SucceededData(result={}))

        got = await followed(services, opening)
    finally:
        services.hub.unsubscribe(other)

    assert got == await stream_ids(redis_client, keys, "j"), "every event once, in order"


async def test_a_full_first_page_is_followed_by_the_rest_of_the_replay(hub_running, redis_client, keys):
    services = hub_running
    await finished_job(services.events, "long", steps=12)

    opening = await opened(services, "long", page_size=5)

    assert opening.page.full and len(opening.page.entries) == 5
    assert await followed(services, opening) == await stream_ids(redis_client, keys, "long")


async def test_an_offset_past_the_last_event_still_gets_the_events_the_hub_read_before_joining(
    hub_running, redis_client, keys
):
    services = hub_running
    events = services.events
    await running_job(events, "ahead")
    opening = await opened(services, "ahead", offset="99999999999999-0")
    other = await services.hub.subscribe(keys.events("ahead"), after=opening.job.last_event_id)
    try:
        await progress(events, "ahead", 1, 1)
        async with asyncio.timeout(5):
            while not other.take():
                await asyncio.sleep(0.02)
        await events.append("ahead", EventType.SUCCEEDED, SucceededData(result={}))

        got = await followed(services, opening, offset="99999999999999-0")
    finally:
        services.hub.unsubscribe(other)

    assert got == (await stream_ids(redis_client, keys, "ahead"))[2:], "what came after the job's last event"

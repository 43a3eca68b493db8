"""The job indexes lose the entries of expired jobs: in the background, bounded per pass, and when listing."""

from __future__ import annotations

import asyncio

import msgspec

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.index import JobIndex
from jobtrail.index_sweep import IndexSweep
from jobtrail.offsets import id_key
from tests.support.topologies import over_topologies

SUBMITTED = {"kind": "demo", "params": {}, "max_attempts": 1}
FAILED = {"error": {"type": "Boom", "message": "no"}}


async def make_jobs(events: EventLog, index: JobIndex, count: int, *, tenant: str | None = None,
                    live_every: int = 0, name: str = "j") -> set[str]:
    """`count` jobs; all but every `live_every`-th fail with a 1 s retention. Returns the ids kept alive."""
    live = set()
    for i in range(count):
        job_id = f"{name}{i:05d}"
        appended = await events.append(job_id, EventType.SUBMITTED, SUBMITTED)
        await index.add(job_id, id_key(appended.id)[0], tenant)
        if live_every and i % live_every == 0:
            live.add(job_id)
        else:
            await events.append(job_id, EventType.FAILED, FAILED, retention_s=1)
    return live


async def wait_expired(redis_client, keys, job_id: str) -> None:
    for _ in range(100):
        if not await redis_client.exists(keys.job(job_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} did not expire")


@over_topologies
async def test_a_sweep_pass_prunes_expired_jobs_within_its_bound_and_later_passes_finish(events, redis_client, keys):
    index = JobIndex(redis_client, keys)
    live = await make_jobs(events, index, 1500, live_every=50)
    live |= await make_jobs(events, index, 600, tenant="acme", live_every=100, name="t")
    await wait_expired(redis_client, keys, "j00001")
    await wait_expired(redis_client, keys, "t00599")
    assert await redis_client.zcard(keys.index()) == 2100
    sweep = IndexSweep(redis_client, keys, per_pass=800, batch=200)

    first = await sweep.prune()

    # 800 entries checked, the oldest first: 16 of those (j00000, j00050, …) are alive.
    assert first == 800 - 16
    assert await redis_client.zcard(keys.index()) == 2100 - first
    passes = [first]
    while len(passes) < 10 and (removed := await sweep.prune()):
        passes.append(removed)
    assert all(n <= 800 for n in passes)
    assert set(await redis_client.zrange(keys.index(), 0, -1)) == live
    assert set(await redis_client.zrange(keys.tenant_index("acme"), 0, -1)) == {j for j in live if j[0] == "t"}
    assert await sweep.prune() == 0, "a clean index stays as it is"
    assert set(await redis_client.zrange(keys.index(), 0, -1)) == live


async def test_the_sweep_starts_over_after_walking_every_index(events, redis_client, keys):
    index = JobIndex(redis_client, keys)
    await make_jobs(events, index, 30, live_every=1)
    sweep = IndexSweep(redis_client, keys, per_pass=1000, batch=7)
    assert await sweep.prune() == 0
    await redis_client.delete(keys.job("j00003"), keys.job("j00029"))  # deleted behind the API's back

    assert await sweep.prune() == 2
    assert await redis_client.zcard(keys.index()) == 28


async def test_a_listing_that_meets_only_expired_jobs_up_to_the_end_has_no_next_page(events, redis_client, keys):
    index = JobIndex(redis_client, keys)
    await make_jobs(events, index, JobIndex.BATCH * 2)
    await wait_expired(redis_client, keys, f"j{JobIndex.BATCH * 2 - 1:05d}")

    jobs, cursor = await index.page(limit=10, scan_limit=JobIndex.BATCH * 2)

    assert (jobs, cursor) == ([], None)
    assert await redis_client.zcard(keys.index()) == 0


async def test_a_listing_stopped_by_its_scan_limit_with_entries_left_still_has_a_next_page(
    events, redis_client, keys
):
    index = JobIndex(redis_client, keys)
    live = await make_jobs(events, index, JobIndex.BATCH + 1, live_every=JobIndex.BATCH + 1)
    await wait_expired(redis_client, keys, f"j{JobIndex.BATCH:05d}")

    jobs, cursor = await index.page(limit=10, scan_limit=JobIndex.BATCH)
    assert jobs == [] and cursor is not None, "the oldest job is still to come"
    jobs, cursor = await index.page(limit=10, cursor=cursor, scan_limit=JobIndex.BATCH)
    assert [job.id for job in jobs] == sorted(live) and cursor is None


@over_topologies
async def test_the_api_process_sweeps_the_indexes_in_the_background(events, redis_client, keys, settings, start_api):
    index = JobIndex(redis_client, keys)
    live = await make_jobs(events, index, 300, live_every=10)
    await wait_expired(redis_client, keys, "j00299")
    api = await start_api(msgspec.structs.replace(settings, artifact_sweep_s=0.2, index_sweep_per_pass=100))
    try:
        for _ in range(100):
            if await redis_client.zcard(keys.index()) == len(live):
                break
            await asyncio.sleep(0.1)
        assert set(await redis_client.zrange(keys.index(), 0, -1)) == live
    finally:
        await api.stop()

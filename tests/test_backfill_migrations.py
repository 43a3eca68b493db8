"""Migrations 0003 and 0004: data written before incarnations and the tenant set existed, brought up to date."""

from __future__ import annotations

from jobtrail.events import EventType, StartedData, SubmittedData, SucceededData
from jobtrail.index import JobIndex
from jobtrail.keys import LegacyKeys
from jobtrail.migrations import Context, discover, migrate
from tests.support.topologies import over_topologies


def context(redis_client, keys, events, **kwargs) -> Context:
    return Context(
        redis=redis_client, keys=keys, events=events, index=JobIndex(redis_client, keys), legacy=LegacyKeys(""),
        **kwargs,
    )


def only(version: str):
    return [m for m in discover() if m.version == version]


async def old_job(events, redis_client, keys, job_id: str) -> None:
    """A finished job as jobtrail wrote it before incarnations: its hash has no `incarnation`."""
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1))
    await events.append(job_id, EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append(job_id, EventType.SUCCEEDED, SucceededData(result=1), attempt=1)
    await redis_client.hdel(keys.job(job_id), "incarnation")


@over_topologies
async def test_0003_gives_old_jobs_their_incarnation_so_hash_equals_fold_again(redis_client, keys, events):
    for job_id in ("old-1", "old-2"):
        await old_job(events, redis_client, keys, job_id)
    await events.append("new", EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1))
    before, rebuilt = await events.rebuild("old-1", dry_run=True)
    assert before != rebuilt, "an old hash differs from the fold of its stream"

    [(_, report)] = await migrate(context(redis_client, keys, events), only("0003"))
    assert (report.imported, report.already_imported, report.skipped) == (2, 1, [])
    for job_id in ("old-1", "old-2", "new"):
        before, rebuilt = await events.rebuild(job_id, dry_run=True)
        assert before == rebuilt
    first = (await redis_client.xrange(keys.events("old-1"), count=1))[0][0]
    assert await redis_client.hget(keys.job("old-1"), "incarnation") == first


async def test_0003_leaves_a_stream_that_lost_its_submitted_alone_and_says_so(redis_client, keys, events):
    await old_job(events, redis_client, keys, "trimmed")
    first = (await redis_client.xrange(keys.events("trimmed"), count=1))[0][0]
    await redis_client.xdel(keys.events("trimmed"), first)
    [(_, report)] = await migrate(context(redis_client, keys, events), only("0003"))
    assert report.imported == 0 and [s.key for s in report.skipped] == [keys.job("trimmed")]
    assert not await redis_client.hexists(keys.job("trimmed"), "incarnation")


async def test_0003_in_a_dry_run_writes_nothing(redis_client, keys, events):
    await old_job(events, redis_client, keys, "old")
    [(_, report)] = await migrate(context(redis_client, keys, events, dry_run=True), only("0003"))
    assert report.imported == 1
    assert not await redis_client.hexists(keys.job("old"), "incarnation")


@over_topologies
async def test_0004_records_tenants_whose_index_predates_the_tenant_set(redis_client, keys, events):
    await redis_client.zadd(keys.tenant_index("acme"), {"j1": 1})
    await redis_client.zadd(keys.tenant_index("globex"), {"j2": 2})
    await redis_client.sadd(keys.tenants(), "globex")
    [(_, report)] = await migrate(context(redis_client, keys, events), only("0004"))
    assert (report.imported, report.already_imported) == (1, 1)
    assert await redis_client.smembers(keys.tenants()) == {"acme", "globex"}
    assert await migrate(context(redis_client, keys, events), only("0004")) == [], "recorded: not applied again"

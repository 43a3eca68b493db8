"""`jobtrail migrate`: legacy job keys, written exactly as the old systems wrote them,
become jobtrail jobs that the public API shows like any other (real Redis, real API)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.index import JobIndex
from jobtrail.keys import LegacyKeys
from jobtrail.migrations import Context, MigrationFailed, applied, discover, migrate
from jobtrail.migrations.legacy import Malformed, fallback_id, to_ms
from tests.support.env import ROOT, worker_env
from tests.support.sse import collect
from tests.support.topologies import TopologyUnderTest, over_topologies

DAY = 24 * 3600
# The legacy imports; the backfills after them (0003, 0004) have tests of their own.
LEGACY = [m for m in discover() if m.version in ("0001", "0002")]


@pytest.fixture
def legacy(prefix: str, topology: TopologyUnderTest):
    """This test's legacy key prefix (legacy keys live outside jobtrail's); removed afterwards."""
    value = f"{prefix}-legacy:"
    yield value
    topology.delete_matching(f"{value}*")


@pytest.fixture
def ctx(redis_client, keys, events, legacy) -> Context:
    return Context(
        redis=redis_client, keys=keys, events=events, index=JobIndex(redis_client, keys), legacy=LegacyKeys(legacy)
    )


# --- the legacy systems, writing their keys the way they did ---


async def export_service_writes(r: aioredis.Redis, legacy: str, job_id: str, ttl_s: int | None = DAY, **job):
    """The export service: `SET export_job:{job_id} <json> EX 86400`, created_at from utcnow()."""
    value = {
        "job_id": job_id, "status": "processing", "filename": None, "download_url": None, "file_size_bytes": None,
        "error": None, "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(), "completed_at": None,
    } | job
    await r.set(f"{legacy}export_job:{job_id}", json.dumps(value), ex=ttl_s)


async def job_system_writes(r: aioredis.Redis, legacy: str, job_id: str, ttl_s: int | None = None, **job):
    """The generic job system: `SET job:{id} <json>`, timestamps from time.time()."""
    now = time.time()
    value = {
        "id": job_id, "status": "queued", "result": None, "error": None, "created_at": now, "updated_at": now,
    } | job
    await r.set(f"{legacy}job:{job_id}", json.dumps(value), ex=ttl_s)


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ms(moment: datetime) -> datetime:
    """`moment` to the millisecond, as jobtrail keeps it."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def history(client, job_id: str) -> list[dict]:
    response = await client.get(f"/jobs/{job_id}/history")
    assert response.status_code == 200, response.text
    return response.json()["events"]


async def dump(r: aioredis.Redis, prefix: str) -> dict[str, object]:
    """Every key under the prefix with its type, content and whether it has a TTL."""
    out: dict[str, object] = {}
    async for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        kind = await r.type(key)
        read = {"hash": r.hgetall, "stream": r.xrange, "string": r.get}.get(kind)
        content = await read(key) if read else await r.zrange(key, 0, -1, withscores=True)
        out[key] = (kind, content, await r.pttl(key) > 0)
    return out


# --- importing: what the API shows afterwards ---


@over_topologies
async def test_a_completed_export_job_keeps_its_result_timestamps_and_ttl(ctx, client, redis_client, keys, legacy):
    await export_service_writes(
        redis_client, legacy, "8f14e45f-ceea-467f-a0e6-5f1c9b2d7a10", status="completed",
        filename="orders-2024-05.csv", download_url="https://files.example.com/exports/orders-2024-05.csv",
        file_size_bytes=48213, created_at="2024-05-01T12:00:00.250123", completed_at="2024-05-01T12:03:07.5",
    )
    [(_migration, report)] = [r for r in await migrate(ctx, LEGACY) if r[0].version == "0001"]
    assert (report.imported, report.already_imported, report.skipped) == (1, 0, [])

    job = (await client.get("/jobs/8f14e45f-ceea-467f-a0e6-5f1c9b2d7a10")).json()
    assert (job["kind"], job["state"], job["progress"], job["attempt"]) == ("legacy.export", "succeeded", 1.0, 1)
    assert job["result"] == {
        "filename": "orders-2024-05.csv", "download_url": "https://files.example.com/exports/orders-2024-05.csv",
        "file_size_bytes": 48213,
    }
    created, completed = datetime(2024, 5, 1, 12, 0, 0, 250000, UTC), datetime(2024, 5, 1, 12, 3, 7, 500000, UTC)
    assert utc(job["created_at"]) == created and utc(job["started_at"]) == created
    assert utc(job["finished_at"]) == completed and utc(job["updated_at"]) == completed
    assert job["params"] == {"legacy_key": f"{legacy}export_job:8f14e45f-ceea-467f-a0e6-5f1c9b2d7a10",
                             "legacy_id": "8f14e45f-ceea-467f-a0e6-5f1c9b2d7a10"}

    events = await history(client, job["id"])
    assert [(e["type"], utc(e["at"])) for e in events] == [
        ("submitted", created), ("started", created), ("succeeded", completed)
    ]
    replay = await collect(client, f"/jobs/{job['id']}/events")
    assert [(m.event, m.id) for m in replay] == [(e["type"], e["id"]) for e in events], "replays, then closes"
    assert replay[-1].json["data"]["result"]["filename"] == "orders-2024-05.csv"

    legacy_ttl = await redis_client.pttl(f"{legacy}export_job:{job['id']}")
    for key in keys.job_keys(job["id"]):
        if key == keys.dedupe(job["id"]) and not await redis_client.exists(key):
            continue  # its keys are the job's own writers', kept in the state hash (app/append.lua)
        assert abs(await redis_client.pttl(key) - legacy_ttl) < 2000, f"{key} keeps the legacy TTL"
    listed = (await client.get("/jobs", params={"kind": "legacy.export"})).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


async def test_a_failed_export_job_keeps_its_error(ctx, client, redis_client, legacy):
    await export_service_writes(
        redis_client, legacy, "e1", status="failed", error="Query timed out after 300s",
        created_at="2024-05-02T08:00:00", completed_at="2024-05-02T08:05:00",
    )
    await migrate(ctx, LEGACY)
    job = (await client.get("/jobs/e1")).json()
    assert job["state"] == "failed" and job["result"] is None
    assert job["error"] == {"type": "LegacyError", "message": "Query timed out after 300s"}
    assert utc(job["finished_at"]) == datetime(2024, 5, 2, 8, 5, tzinfo=UTC)
    replay = await collect(client, "/jobs/e1/events")
    assert [m.event for m in replay] == ["submitted", "started", "failed"]


async def test_a_still_processing_export_job_is_imported_as_interrupted(ctx, client, redis_client, legacy):
    created = datetime.now(UTC) - timedelta(minutes=5)
    await export_service_writes(redis_client, legacy, "busy", created_at=created.replace(tzinfo=None).isoformat())
    before = datetime.now(UTC)
    [(_, report), _] = await migrate(ctx, LEGACY)
    assert report.interrupted == [f"{legacy}export_job:busy"]

    job = (await client.get("/jobs/busy")).json()
    assert job["state"] == "failed" and job["error"]["type"] == "LegacyInterrupted"
    assert "still running in the legacy system" in job["error"]["message"]
    assert utc(job["created_at"]) == ms(created) and utc(job["started_at"]) == ms(created)
    assert utc(job["finished_at"]) >= ms(before), "it was declared failed when it was imported"
    assert [e["type"] for e in await history(client, "busy")] == ["submitted", "started", "failed"]


@over_topologies
async def test_generic_jobs_map_each_status(ctx, client, redis_client, keys, legacy):
    created, updated = 1714564800.123, 1714564860.5  # what time.time() wrote
    await job_system_writes(redis_client, legacy, "42", status="done", result={"rows": 17, "ok": True},
                            created_at=created, updated_at=updated)
    await job_system_writes(redis_client, legacy, "43", status="error", error="KeyError: 'customer_id'",
                            created_at="2024-05-01T12:00:00Z", updated_at="2024-05-01T12:00:09Z")
    await job_system_writes(redis_client, legacy, "44", status="queued", created_at=created + 3600, ttl_s=3600)
    await job_system_writes(redis_client, legacy, "45", status="running")
    [_, (_, report)] = await migrate(ctx, LEGACY)
    assert (report.imported, report.skipped) == (4, [])
    assert report.interrupted == [f"{legacy}job:45"] and report.pending == [f"{legacy}job:44"]

    done = (await client.get("/jobs/42")).json()
    assert (done["kind"], done["state"], done["result"]) == ("legacy.job", "succeeded", {"rows": 17, "ok": True})
    assert utc(done["created_at"]) == datetime.fromtimestamp(1714564800.123, UTC)
    assert utc(done["finished_at"]) == datetime.fromtimestamp(1714564860.5, UTC)

    error = (await client.get("/jobs/43")).json()
    assert error["error"] == {"type": "LegacyError", "message": "KeyError: 'customer_id'"}
    assert [utc(e["at"]) for e in await history(client, "43")] == [
        datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 0, 9, tzinfo=UTC),
    ]

    queued = (await client.get("/jobs/44")).json()
    assert queued["state"] == "pending" and queued["attempt"] == 0
    assert [e["type"] for e in await history(client, "44")] == ["submitted"]
    assert await redis_client.xlen(keys.queue()) == 0, "a legacy job is never enqueued: no worker can run it"
    assert 3_597_000 < await redis_client.pttl(keys.job("44")) <= 3_600_000, "a pending job keeps the legacy TTL"
    assert (await client.post("/jobs/44/cancel")).json()["state"] == "cancelled", "it can be cancelled"

    assert (await client.get("/jobs/45")).json()["error"]["type"] == "LegacyInterrupted"
    retention = await redis_client.ttl(keys.events("42"))
    assert retention > 7 * DAY - 60, "no legacy TTL: the normal retention"
    listed = (await client.get("/jobs", params={"kind": "legacy.job"})).json()["jobs"]
    assert [j["id"] for j in listed] == ["45", "44", "42", "43"], "listed newest first by legacy creation time"


async def test_a_legacy_id_that_is_not_a_job_id_or_is_taken_gets_a_derived_one(ctx, client, redis_client, legacy):
    await job_system_writes(redis_client, legacy, "reports/2024 05", status="done", result=1)
    await job_system_writes(redis_client, legacy, "same", status="done", result="generic")
    await export_service_writes(redis_client, legacy, "same", status="completed", filename="export.csv")
    await migrate(ctx, LEGACY)

    odd = (await client.get(f"/jobs/{fallback_id(f'{legacy}job:reports/2024 05')}")).json()
    assert odd["result"] == 1 and odd["params"]["legacy_id"] == "reports/2024 05"
    assert (await client.get("/jobs/same")).json()["kind"] == "legacy.export", "0001 ran first and took the id"
    generic = (await client.get(f"/jobs/{fallback_id(f'{legacy}job:same')}")).json()
    assert generic["result"] == "generic" and generic["params"]["legacy_key"] == f"{legacy}job:same"


async def test_malformed_values_are_skipped_and_listed_never_half_imported(ctx, redis_client, keys, legacy):
    await export_service_writes(redis_client, legacy, "good", status="completed")
    bad = {
        "export_job:notjson": ("{'job_id': 'notjson'", "not JSON"),
        "export_job:list": ('["list"]', "Expected `object`, got `array`"),
        "export_job:status": ('{"job_id": "status", "status": "paused", "created_at": 1714564800}', "paused"),
        "export_job:nocreated": ('{"job_id": "nocreated", "status": "completed"}', "created_at"),
        "export_job:when": ('{"job_id": "when", "status": "failed", "created_at": "yesterday"}',
                            "created_at 'yesterday' is not a timestamp"),
        "export_job:other": ('{"job_id": "x", "status": "failed", "created_at": 1714564800}',
                             "job_id 'x' does not match the key"),
        "job:negative": ('{"id": "negative", "status": "done", "created_at": 1, "result": {"n": -1}, "updated_at": -5}',
                     "updated_at -5 is not a timestamp"),
    }
    for key, (value, _) in bad.items():
        await redis_client.set(f"{legacy}{key}", value, ex=DAY)
    await redis_client.hset(f"{legacy}job:hash", mapping={"id": "hash", "status": "done"})

    reports = {m.version: r for m, r in await migrate(ctx, LEGACY)}
    skipped = {s.key: s.reason for r in reports.values() for s in r.skipped}
    assert set(skipped) == {f"{legacy}{key}" for key in bad} | {f"{legacy}job:hash"}
    for key, (_, reason) in bad.items():
        assert reason in skipped[f"{legacy}{key}"], (key, skipped[f"{legacy}{key}"])
    assert "not a JSON string" in skipped[f"{legacy}job:hash"]
    assert (reports["0001"].imported, reports["0002"].imported) == (1, 0)
    assert await redis_client.zrange(keys.index(), 0, -1) == ["good"], "nothing else became a job"
    assert {keys.job_id_of(k) async for k in redis_client.scan_iter(match=f"{keys.prefix}:job:*")} == {"good"}
    records = await applied(ctx)
    assert (records["0001"].imported, records["0001"].skipped, records["0002"].skipped) == (1, 6, 2)


# --- running again ---


@over_topologies
async def test_running_again_changes_nothing(ctx, redis_client, keys, legacy):
    await export_service_writes(redis_client, legacy, "a", status="completed", filename="a.csv")
    await export_service_writes(redis_client, legacy, "b", status="failed", error="disk full", ttl_s=None)
    await job_system_writes(redis_client, legacy, "c", status="queued", ttl_s=600)
    await job_system_writes(redis_client, legacy, "d", status="running")
    assert len(await migrate(ctx, LEGACY)) == 2
    first = await dump(redis_client, keys.prefix)

    assert await migrate(ctx, LEGACY) == [], "both are recorded as applied"
    assert await dump(redis_client, keys.prefix) == first

    # As if the run had died before recording them: every job is found already imported.
    await redis_client.delete(keys.migrations())
    reports = await migrate(ctx, LEGACY)
    assert [(r.imported, r.already_imported) for _, r in reports] == [(0, 2), (0, 2)]
    again = await dump(redis_client, keys.prefix)
    ledger = keys.migrations()
    assert {k: v for k, v in again.items() if k != ledger} == {k: v for k, v in first.items() if k != ledger}


async def test_a_job_left_half_imported_by_a_killed_run_is_completed_by_the_next(
    ctx, client, redis_client, keys, legacy, settings
):
    await export_service_writes(redis_client, legacy, "x", status="completed", filename="x.csv")
    killed = Context(**{**vars(ctx), "events": Failing(redis_client, keys, settings.retention_s,
                                                        fail_on=EventType.SUCCEEDED, error=asyncio.CancelledError())})
    with pytest.raises(asyncio.CancelledError):
        await migrate(killed, LEGACY)
    assert (await client.get("/jobs/x")).json()["state"] == "running", "the process died mid-job"
    assert await redis_client.exists(keys.migrations_lock()) == 0

    [(_, report), _] = await migrate(ctx, LEGACY)
    assert (report.imported, report.already_imported) == (1, 0)
    assert [e["type"] for e in await history(client, "x")] == ["submitted", "started", "succeeded"]
    assert (await client.get("/jobs/x")).json()["result"]["filename"] == "x.csv"


# --- failures ---


class Failing(EventLog):
    """Real Redis, except that appending one event type raises `error` (a lost connection, a kill)."""

    def __init__(self, *args, fail_on: EventType, error: BaseException, activity_maxlen: int = 0) -> None:
        super().__init__(*args, activity_maxlen=activity_maxlen)
        self.fail_on = fail_on
        self.error = error

    async def append(self, job_id, event_type, *args, **kwargs):
        if event_type is self.fail_on:
            raise self.error
        return await super().append(job_id, event_type, *args, **kwargs)


async def test_a_failure_mid_job_removes_the_partial_job_and_records_nothing(ctx, client, redis_client, keys, legacy,
                                                                              settings):
    await export_service_writes(redis_client, legacy, "y", status="completed")
    failing = Context(**{**vars(ctx), "events": Failing(redis_client, keys, settings.retention_s,
                                                         fail_on=EventType.SUCCEEDED,
                                                         error=RedisConnectionError("Connection reset by peer"))})
    with pytest.raises(MigrationFailed) as failed:
        await migrate(failing, LEGACY)
    assert failed.value.key == f"{legacy}export_job:y"
    assert "0001 legacy_export_jobs failed" in str(failed.value) and "Connection reset by peer" in str(failed.value)
    assert (await client.get("/jobs/y")).status_code == 404, "nothing half-imported"
    assert await redis_client.exists(*keys.all_job_keys("y"), keys.index(), keys.migrations()) == 0


def jobtrail(settings, legacy, *args):
    env = worker_env(settings) | {"JOBTRAIL_LEGACY_PREFIX": legacy}
    return subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


async def test_a_redis_error_stops_the_run_names_the_key_and_records_nothing(settings, redis_client, keys, legacy):
    await export_service_writes(redis_client, legacy, "ok", status="completed")
    await export_service_writes(redis_client, legacy, "clash", status="completed")
    await job_system_writes(redis_client, legacy, "later", status="done")
    await redis_client.set(keys.job("clash"), "not a hash")  # the append script meets a WRONGTYPE

    result = jobtrail(settings, legacy, "migrate")
    assert result.returncode == 1, result.stdout + result.stderr
    failed = f"migration 0001 legacy_export_jobs failed: importing {legacy}export_job:clash: ResponseError"
    assert failed in result.stdout
    assert await redis_client.exists(keys.migrations()) == 0
    assert await redis_client.exists(keys.job("later")) == 0, "the migrations after it did not run"
    status = jobtrail(settings, legacy, "migrate", "--status")
    assert "0001 legacy_export_jobs: pending" in status.stdout and "0002 legacy_generic_jobs: pending" in status.stdout

    await redis_client.delete(keys.job("clash"))
    result = jobtrail(settings, legacy, "migrate")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = re.search(r"0001 legacy_export_jobs: imported (\d+), already imported (\d+), skipped 0", result.stdout)
    assert counts and int(counts[1]) >= 1 and int(counts[1]) + int(counts[2]) == 2, "jobs imported before it stay"
    assert await redis_client.hget(keys.job("clash"), "state") == "succeeded"


@over_topologies
async def test_cli_dry_run_writes_nothing_then_migrate_reports_and_status_lists(settings, redis_client, keys, legacy):
    await export_service_writes(redis_client, legacy, "p", status="processing")
    await job_system_writes(redis_client, legacy, "q", status="queued")
    await redis_client.set(f"{legacy}job:broken", "{", ex=60)

    dry = jobtrail(settings, legacy, "migrate", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "0001 legacy_export_jobs: would import 1, already imported 0, skipped 0" in dry.stdout
    assert [k async for k in redis_client.scan_iter(match=f"{keys.prefix}:*")] == [], "a dry run writes nothing"

    run = jobtrail(settings, legacy, "migrate")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "0001 legacy_export_jobs: imported 1, already imported 0, skipped 0" in lines
    interrupted = (
        f"  1 still running in the legacy system, imported as failed (LegacyInterrupted): {legacy}export_job:p"
    )
    assert interrupted in lines
    assert "0002 legacy_generic_jobs: imported 1, already imported 0, skipped 1" in lines
    assert any(line.startswith(f"  skipped {legacy}job:broken: not JSON") for line in lines)
    assert any(line.startswith("  1 still queued in the legacy system, imported as pending") for line in lines)
    assert "0003 job_incarnations: imported 0, already imported 2, skipped 0" in lines, "imported jobs have theirs"
    assert lines[-1] == "4 migration(s) applied"

    status = jobtrail(settings, legacy, "migrate", "--status")
    assert status.returncode == 0
    assert [line.split(" applied ")[0] for line in status.stdout.splitlines()] == [
        "0001 legacy_export_jobs:", "0002 legacy_generic_jobs:", "0003 job_incarnations:", "0004 tenant_set:"
    ]
    assert "(imported 1, already imported 0, skipped 1)" in status.stdout
    again = jobtrail(settings, legacy, "migrate")
    assert again.returncode == 0 and again.stdout.strip() == "0 migration(s) applied"


async def test_migrate_with_the_activity_feed_turned_off_writes_no_feed(settings, redis_client, keys, legacy):
    """JOBTRAIL_ACTIVITY_MAXLEN=0 reaches the event log `migrate` builds (app/services.py), as it does the API's."""
    await export_service_writes(redis_client, legacy, "done", status="completed")
    await job_system_writes(redis_client, legacy, "ran", status="done")
    env = worker_env(settings) | {"JOBTRAIL_LEGACY_PREFIX": legacy, "JOBTRAIL_ACTIVITY_MAXLEN": "0"}
    result = subprocess.run([sys.executable, "-m", "jobtrail.cli", "migrate"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert await redis_client.hget(keys.job("done"), "state") == "succeeded", "the jobs were imported"
    assert await redis_client.exists(keys.activity()) == 0, "and nothing was written to the activity feed"


@over_topologies
async def test_a_second_run_while_one_holds_the_lock_is_refused(ctx, redis_client, keys):
    await redis_client.set(keys.migrations_lock(), "someone", ex=30)
    with pytest.raises(MigrationFailed, match="another `jobtrail migrate` is running"):
        await migrate(ctx, LEGACY)
    assert await redis_client.exists(keys.migrations()) == 0


# --- the pieces ---


def test_migrations_are_discovered_in_version_order():
    assert [(m.version, m.name) for m in discover()] == [
        ("0001", "legacy_export_jobs"), ("0002", "legacy_generic_jobs"), ("0003", "job_incarnations"),
        ("0004", "tenant_set"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1714564800000),
        ("2024-05-01T12:00:00.123456", 1714564800123),  # naive: UTC
        ("2024-05-01T14:00:00+02:00", 1714564800000),
        (1714564800, 1714564800000),
        (1714564800.123, 1714564800123),
        (1714564800123, 1714564800123),
        ("1714564800", 1714564800000),
    ],
)
def test_legacy_timestamps_in_every_form_they_were_written(value, expected):
    assert to_ms(value, "created_at") == expected


@pytest.mark.parametrize("value", ["soon", -1, float("nan"), True, "1969-12-31T23:59:59Z"])
def test_a_value_that_is_no_timestamp_is_malformed(value):
    with pytest.raises(Malformed, match="created_at"):
        to_ms(value, "created_at")

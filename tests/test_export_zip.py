"""export.zip: finished jobs' artifacts and histories in one ZIP, streamed, with a manifest of what became of each."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
import tracemalloc
import zipfile
from pathlib import Path

import httpx
import msgspec
import pytest

from jobtrail.auth import hash_key, new_key
from jobtrail.events import EventType, State, SubmittedData
from jobtrail.jobstate import JobState
from jobtrail.registry import _KINDS, Kind, validate_params
from jobtrail.workers.runner import Runner

MB = 1 << 20


class BlobParams(msgspec.Struct):
    size: int
    seed: int = 1


async def write_blob(params: BlobParams, ctx):
    """A test kind: `size` pseudo-random (incompressible) bytes, written a megabyte at a time."""
    rng = random.Random(params.seed)
    with ctx.artifact("blob.bin", "application/octet-stream") as file:
        left = params.size
        while left:
            file.write(rng.randbytes(min(left, MB)))
            left -= min(left, MB)
    return {"bytes": params.size}


@pytest.fixture(autouse=True)
def blob_kind():
    _KINDS["test.blob"] = Kind("test.blob", BlobParams, write_blob)
    yield
    del _KINDS["test.blob"]


async def submit(events, job_id: str, kind: str, params: dict, max_attempts: int = 1) -> None:
    data = SubmittedData(kind=kind, params=validate_params(kind, params), max_attempts=max_attempts)
    await events.append(job_id, EventType.SUBMITTED, data)


async def run(events, settings, job_id: str, kind: str, params: dict) -> JobState:
    await submit(events, job_id, kind, params)
    await Runner(events, settings).run(job_id)
    return await events.state(job_id)


async def export(client, events, settings, job_ids: list[str], **params) -> tuple[JobState, zipfile.ZipFile]:
    """Run an export.zip job in-process; its state and the downloaded archive."""
    job = await run(events, settings, "zip", "export.zip", {"job_ids": job_ids, **params})
    assert job.state is State.SUCCEEDED, job.error
    response = await client.get("/jobs/zip/artifact")
    assert response.status_code == 200
    assert (len(response.content), hashlib.sha256(response.content).hexdigest()) == (
        job.artifact.size_bytes, job.artifact.sha256
    )
    assert job.artifact.content_type == "application/zip" == response.headers["content-type"]
    return job, zipfile.ZipFile(io.BytesIO(response.content))


def artifact_path(settings, job: JobState) -> Path:
    return Path(settings.artifact_dir) / job.id / job.artifact.name


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"job_ids": []}, "length >= 1"),
        ({"job_ids": [f"j{i}" for i in range(101)]}, "length <= 100"),
        ({"job_ids": ["a", "b", "a"]}, "repeated: a"),
        ({"job_ids": ["../etc"]}, "$.job_ids[0]"),
        ({"job_ids": ["a\n"]}, "$.job_ids[0]"),
        ({"job_ids": "a"}, "$.job_ids"),
        ({"job_ids": ["a"], "include_artifacts": True}, "unknown field `include_artifacts`"),
        ({}, "missing required field `job_ids`"),
    ],
)
async def test_bad_params_are_refused_at_submit_with_422(client, params, says):
    response = await client.post("/jobs", json={"kind": "export.zip", "params": params})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_params" and says in response.json()["detail"]


async def test_zip_holds_finished_artifacts_and_its_manifest_reports_every_other_job(client, events, settings):
    done = await run(events, settings, "done", "test.blob", {"size": 300_000})
    await run(events, settings, "plain", "demo", {"steps": 1, "delay_ms": 0})
    await run(events, settings, "broken", "demo", {"steps": 2, "delay_ms": 0, "fail_at_step": 1})
    await submit(events, "waiting", "demo", {"steps": 1})

    job, archive = await export(client, events, settings, ["done", "plain", "waiting", "broken", "ghost"])

    assert archive.testzip() is None
    assert archive.namelist() == ["done/blob.bin", "manifest.json"]
    assert archive.read("done/blob.bin") == artifact_path(settings, done).read_bytes()
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["export_job_id"] == "zip" and manifest["include_history"] is False
    entries = {entry["job_id"]: entry for entry in manifest["jobs"]}
    assert list(entries) == ["done", "plain", "waiting", "broken", "ghost"], "in the order asked for"
    assert {j: (e["status"], e.get("state")) for j, e in entries.items()} == {
        "done": ("included", "succeeded"),
        "plain": ("no_artifact", "succeeded"),
        "waiting": ("not_finished", "pending"),
        "broken": ("not_succeeded", "failed"),
        "ghost": ("missing", None),
    }
    assert entries["done"]["files"] == [{
        "name": "done/blob.bin", "size_bytes": 300_000, "sha256": done.artifact.sha256,
        "content_type": "application/octet-stream",
    }]
    assert all("files" not in e for j, e in entries.items() if j != "done")
    assert job.result == {
        "files": 2, "jobs": 5,
        "statuses": {"included": 1, "missing": 1, "no_artifact": 1, "not_finished": 1, "not_succeeded": 1},
    }

    history = [e async for e in events.events("zip")]
    assert [e.data["phase"] for e in history if e.type is EventType.PHASE] == ["collect", "bundle"]
    fractions = [e.data["progress"] for e in history if e.type is EventType.PROGRESS]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 7


async def test_histories_are_bundled_as_ndjson_equal_to_each_jobs_history(client, events, settings):
    await run(events, settings, "long", "test.blob", {"size": 1_000})
    await run(events, settings, "chatty", "demo", {"steps": 1_200, "delay_ms": 0})  # three pages of events
    await submit(events, "waiting", "demo", {"steps": 1})

    _, archive = await export(client, events, settings, ["long", "chatty", "waiting", "ghost"], include_history=True)

    assert archive.namelist() == [
        "long/blob.bin", "long/history.ndjson", "chatty/history.ndjson", "waiting/history.ndjson", "manifest.json"
    ]
    entries = {e["job_id"]: e for e in json.loads(archive.read("manifest.json"))["jobs"]}
    for job_id in ("long", "chatty", "waiting"):
        member = archive.read(f"{job_id}/history.ndjson")
        served = await client.get(f"/jobs/{job_id}/history", headers={"Accept": "application/x-ndjson"})
        assert member == served.content, f"{job_id}: the history in the ZIP is the one the API serves"
        lines = member.splitlines()
        assert len(lines) == (await events.state(job_id)).event_count
        assert [json.loads(line)["id"] for line in lines] == [e.id async for e in events.events(job_id)]
        [recorded] = [f for f in entries[job_id]["files"] if f["name"].endswith("history.ndjson")]
        assert recorded == {"name": f"{job_id}/history.ndjson", "size_bytes": len(member),
                            "sha256": hashlib.sha256(member).hexdigest(), "events": len(lines)}
    assert len(archive.read("chatty/history.ndjson").splitlines()) > 1_200
    assert entries["ghost"]["status"] == "missing" and "files" not in entries["ghost"]


async def test_an_artifact_changed_or_gone_on_disk_is_reported_not_passed_off(client, events, settings):
    changed = await run(events, settings, "changed", "test.blob", {"size": 10_000})
    gone = await run(events, settings, "gone", "test.blob", {"size": 10_000})
    path = artifact_path(settings, changed)
    tampered = bytearray(path.read_bytes())
    tampered[5_000] ^= 0xFF
    path.write_bytes(tampered)
    artifact_path(settings, gone).unlink()

    _, archive = await export(client, events, settings, ["changed", "gone"])

    entries = {e["job_id"]: e for e in json.loads(archive.read("manifest.json"))["jobs"]}
    assert entries["changed"]["status"] == "checksum_mismatch"
    assert entries["changed"]["recorded"]["sha256"] == changed.artifact.sha256
    assert entries["changed"]["files"][0]["sha256"] == hashlib.sha256(tampered).hexdigest() != changed.artifact.sha256
    assert entries["gone"]["status"] == "artifact_file_missing" and "blob.bin" in entries["gone"]["detail"]
    assert archive.namelist() == ["changed/blob.bin", "manifest.json"]


async def test_a_20_mb_artifact_is_streamed_into_the_zip_with_bounded_memory(client, events, settings):
    size = 20 * MB
    big = await run(events, settings, "big", "test.blob", {"size": size, "seed": 7})
    assert big.artifact.size_bytes == size

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        await submit(events, "zip", "export.zip", {"job_ids": ["big"]})
        await Runner(events, settings).run("zip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MB, f"peak {peak / MB:.1f} MB while bundling a {size // MB} MB file"

    job = await events.state("zip")
    assert job.state is State.SUCCEEDED
    with zipfile.ZipFile(artifact_path(settings, job)) as archive, archive.open("big/blob.bin") as member:
        digest = hashlib.sha256()
        while chunk := member.read(MB):
            digest.update(chunk)
    assert digest.hexdigest() == big.artifact.sha256
    progress = [e.data async for e in events.events("zip") if e.type is EventType.PROGRESS]
    within = [d for d in progress if d.get("message", "").startswith("big/blob.bin")]
    assert len(within) >= 10, "progress inside a large file, not only per file"


async def test_cancelled_export_leaves_no_zip_behind(events, settings):
    await run(events, settings, "big", "test.blob", {"size": 20 * MB})
    await submit(events, "zip", "export.zip", {"job_ids": ["big"]})
    task = asyncio.create_task(Runner(events, settings).run("zip"))
    deadline = time.monotonic() + 20
    while (job := await events.state("zip")).phase != "bundle" or job.progress < 0.1:
        assert time.monotonic() < deadline and not task.done(), job
        await asyncio.sleep(0.005)
    await events.append("zip", EventType.CANCEL_REQUESTED, {})
    await asyncio.wait_for(task, 10)
    assert (await events.state("zip")).state is State.CANCELLED
    assert list((Path(settings.artifact_dir) / "zip").iterdir()) == [], "no zip and no temporary"


async def test_an_export_sees_another_tenants_jobs_as_missing_exactly_like_unknown_ids(start_api, events, settings):
    acme, globex, admin = new_key(), new_key(), new_key()
    secured = msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(acme)}, globex:{hash_key(globex)}, *:{hash_key(admin)}"
    )
    api = await start_api(secured)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:

        async def ran(key: str, kind: str, params: dict) -> str:
            response = await http.post("/jobs", json={"kind": kind, "params": params},
                                       headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 202, response.text
            await Runner(events, settings).run(job_id := response.json()["id"])
            return job_id

        async def exported(key: str, job_ids: list[str]) -> tuple[list[str], dict[str, dict]]:
            export_id = await ran(key, "export.zip", {"job_ids": job_ids, "include_history": True})
            response = await http.get(f"/jobs/{export_id}/artifact", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            archive = zipfile.ZipFile(io.BytesIO(response.content))
            entries = {e["job_id"]: e for e in json.loads(archive.read("manifest.json"))["jobs"]}
            return archive.namelist(), entries

        theirs = await ran(acme, "test.blob", {"size": 1_000})
        mine = await ran(globex, "test.blob", {"size": 2_000})
        ghost = "0" * 32

        names, entries = await exported(globex, [theirs, mine, ghost])
        assert names == [f"{mine}/blob.bin", f"{mine}/history.ndjson", "manifest.json"]
        assert entries[ghost] == {"job_id": ghost, "status": "missing", "detail": "no such job (or it expired)"}
        assert entries[theirs] == {**entries[ghost], "job_id": theirs}, "no state, no kind, no files: as if unknown"
        assert entries[mine]["status"] == "included"

        names, entries = await exported(acme, [theirs, mine])
        assert names == [f"{theirs}/blob.bin", f"{theirs}/history.ndjson", "manifest.json"]
        assert entries[mine]["status"] == "missing"

        names, entries = await exported(admin, [theirs, mine])  # an admin sees every tenant's jobs
        assert {entries[theirs]["status"], entries[mine]["status"]} == {"included"}
        assert len(names) == 5


@pytest.mark.e2e
async def test_worker_process_bundles_a_pdf_report_into_a_downloadable_zip(client, start_worker):
    start_worker()

    async def finished(job_id: str) -> dict:
        deadline = time.monotonic() + 30
        while (job := (await client.get(f"/jobs/{job_id}")).json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
            await asyncio.sleep(0.05)
        assert job["state"] == "succeeded", job
        return job

    params = {"title": "Monthly", "start_date": "2024-01-01", "end_date": "2024-06-30", "group_by": "month"}
    pdf_id = (await client.post("/jobs", json={"kind": "export.pdf", "params": params})).json()["id"]
    pdf_job = await finished(pdf_id)
    response = await client.post(
        "/jobs", json={"kind": "export.zip", "params": {"job_ids": [pdf_id, "gone"], "include_history": True}}
    )
    assert response.status_code == 202, response.text
    zip_job = await finished(response.json()["id"])

    content = (await client.get(f"/jobs/{zip_job['id']}/artifact")).content
    assert hashlib.sha256(content).hexdigest() == zip_job["artifact"]["sha256"]
    archive = zipfile.ZipFile(io.BytesIO(content))
    pdf = archive.read(f"{pdf_id}/monthly.pdf")
    assert pdf == (await client.get(f"/jobs/{pdf_id}/artifact")).content
    assert hashlib.sha256(pdf).hexdigest() == pdf_job["artifact"]["sha256"]
    statuses = {e["job_id"]: e["status"] for e in json.loads(archive.read("manifest.json"))["jobs"]}
    assert statuses == {pdf_id: "included", "gone": "missing"}
    assert json.loads(archive.read(f"{pdf_id}/history.ndjson").splitlines()[-1])["type"] == "succeeded"


@pytest.mark.e2e
async def test_a_worker_process_exports_another_tenants_pdf_as_missing(start_api, settings, start_worker):
    acme, globex = new_key(), new_key()
    api = await start_api(msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(acme)}, globex:{hash_key(globex)}"
    ))
    start_worker()
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:

        async def finished(key: str, kind: str, params: dict) -> dict:
            headers = {"Authorization": f"Bearer {key}"}
            response = await http.post("/jobs", json={"kind": kind, "params": params}, headers=headers)
            assert response.status_code == 202, response.text
            deadline = time.monotonic() + 30
            while (job := (await http.get(f"/jobs/{response.json()['id']}", headers=headers)).json())["state"] not in (
                "succeeded", "failed"
            ):
                assert time.monotonic() < deadline, f"still {job['state']}"
                await asyncio.sleep(0.05)
            assert job["state"] == "succeeded", job
            return job

        params = {"title": "Acme only", "start_date": "2024-01-01", "end_date": "2024-01-31", "group_by": "month"}
        pdf = await finished(acme, "export.pdf", params)
        export_job = await finished(globex, "export.zip", {"job_ids": [pdf["id"]], "include_history": True})
        content = (await http.get(f"/jobs/{export_job['id']}/artifact",
                                  headers={"Authorization": f"Bearer {globex}"})).content
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.namelist() == ["manifest.json"]
    assert json.loads(archive.read("manifest.json"))["jobs"] == [
        {"job_id": pdf["id"], "status": "missing", "detail": "no such job (or it expired)"}
    ]

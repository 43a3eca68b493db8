"""Artifacts: written atomically, recorded in `succeeded`, downloadable, removed with their job."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import msgspec
import pytest

from jobtrail.artifacts import ArtifactStore
from jobtrail.events import EventType, StartedData, SubmittedData
from jobtrail.registry import _KINDS, Kind
from jobtrail.sweeper import sweep_once
from jobtrail.workers.runner import Runner


class FileParams(msgspec.Struct):
    size: int = 100_000
    fail: bool = False


async def write_file(params: FileParams, ctx):
    with ctx.artifact("data.bin", "application/octet-stream") as file:
        for i in range(params.size // 1000):
            file.write(bytes([i % 256]) * 1000)
            if params.fail and i == 10:
                raise OSError("disk went away")
        await ctx.progress(1.0)
    return {"bytes": params.size}


@pytest.fixture
def file_kind():
    _KINDS["test.file"] = Kind("test.file", FileParams, write_file)
    yield "test.file"
    del _KINDS["test.file"]


def expected_bytes(size: int) -> bytes:
    return b"".join(bytes([i % 256]) * 1000 for i in range(size // 1000))


async def submit(events, job_id, kind, params, max_attempts=1):
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind=kind, params=params, max_attempts=max_attempts))


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer("job", "out.pdf", "application/pdf") as (file, _):
        file.write(b"half a file")
        raise RuntimeError("killed")
    assert list((tmp_path / "job").iterdir()) == []


def test_complete_write_is_renamed_into_place_and_described(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.writer("job", "out.txt", "text/plain") as (file, out):
        file.write(b"hello")
        assert not (tmp_path / "job" / "out.txt").exists(), "nothing under the final name until complete"
    [artifact] = out
    assert (artifact.name, artifact.size_bytes, artifact.content_type) == ("out.txt", 5, "text/plain")
    assert artifact.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert (tmp_path / "job" / "out.txt").read_bytes() == b"hello"


def test_temporary_left_by_a_killed_writer_is_removed_by_the_next_attempt(tmp_path):
    store = ArtifactStore(tmp_path)
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / ".out.txt.0123abcd.part").write_bytes(b"half a file from a SIGKILLed worker")
    with store.writer("job", "out.txt", "text/plain") as (file, _):
        file.write(b"whole")
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["out.txt"]


def test_job_ids_with_a_trailing_newline_are_refused(tmp_path):
    with pytest.raises(ValueError):
        ArtifactStore(tmp_path).job_dir("job\n")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_artifact_names_cannot_escape_the_job_folder(tmp_path, name):
    with pytest.raises(ValueError), ArtifactStore(tmp_path).writer("job", name, "text/plain"):
        pass


async def test_succeeded_event_carries_the_artifact_and_it_downloads(client, events, settings, file_kind):
    await submit(events, "j", file_kind, {"size": 50_000})
    await Runner(events, settings).run("j")
    job = (await client.get("/jobs/j")).json()
    content = expected_bytes(50_000)
    assert job["state"] == "succeeded"
    recorded = {
        "name": "data.bin", "size_bytes": 50_000, "sha256": hashlib.sha256(content).hexdigest(),
        "content_type": "application/octet-stream",
    }
    assert job["artifact"] == {**recorded, "download_url": "/jobs/j/artifact"}
    history = (await client.get("/jobs/j/history")).json()["events"]
    assert history[-1]["data"]["artifact"] == recorded
    response = await client.get("/jobs/j/artifact")
    assert response.status_code == 200 and response.content == content
    assert response.headers["content-type"] == "application/octet-stream"
    assert 'filename="data.bin"' in response.headers["content-disposition"]


async def test_failed_attempt_leaves_no_artifact(client, events, settings, file_kind):
    await submit(events, "j", file_kind, {"size": 50_000, "fail": True})
    await Runner(events, settings).run("j")
    job = (await client.get("/jobs/j")).json()
    assert job["state"] == "failed" and job["artifact"] is None
    assert list((Path(settings.artifact_dir) / "j").iterdir()) == []
    assert (await client.get("/jobs/j/artifact")).json()["error"] == "artifact_not_found"


async def test_artifact_of_a_running_job_is_409_and_of_a_job_without_one_404(client, events):
    await submit(events, "j", "demo", {"steps": 1})
    assert (await client.get("/jobs/j/artifact")).status_code == 409
    await events.append("j", EventType.STARTED, StartedData(worker="w", attempt=1))
    assert (await client.get("/jobs/j/artifact")).json()["error"] == "job_not_finished"
    await events.append("j", EventType.SUCCEEDED, {"result": 1})
    assert (await client.get("/jobs/j/artifact")).status_code == 404
    assert (await client.get("/jobs/missing/artifact")).status_code == 404


async def test_delete_removes_the_artifact(client, events, settings, file_kind):
    await submit(events, "j", file_kind, {"size": 5_000})
    await Runner(events, settings).run("j")
    assert (Path(settings.artifact_dir) / "j" / "data.bin").is_file()
    assert (await client.delete("/jobs/j")).status_code == 204
    assert not (Path(settings.artifact_dir) / "j").exists()


async def test_sweeper_removes_artifacts_of_expired_jobs_only(events, settings, redis_client, keys, file_kind):
    for job_id in ("kept", "expired"):
        await submit(events, job_id, file_kind, {"size": 1_000})
        await Runner(events, settings).run(job_id)
    store = ArtifactStore(settings.artifact_dir)
    await redis_client.delete(*keys.all_job_keys("expired"))  # as retention would
    assert await sweep_once(store, redis_client, keys, grace_s=60) == [], "recent folders get a grace period"
    old = os.stat(store.job_dir("expired")).st_mtime - 120
    os.utime(store.job_dir("expired"), (old, old))
    assert await sweep_once(store, redis_client, keys, grace_s=60) == ["expired"]
    assert sorted(store.job_ids()) == ["kept"]


async def test_api_process_runs_the_sweeper(start_api, settings, events, redis_client, keys, file_kind):
    await submit(events, "gone", file_kind, {"size": 1_000})
    await Runner(events, settings).run("gone")
    store = ArtifactStore(settings.artifact_dir)
    old = os.stat(store.job_dir("gone")).st_mtime - 120
    os.utime(store.job_dir("gone"), (old, old))
    await redis_client.delete(*keys.all_job_keys("gone"))
    await start_api(msgspec.structs.replace(settings, artifact_sweep_s=0.1))
    for _ in range(100):
        if not store.job_dir("gone").exists():
            break
        await asyncio.sleep(0.05)
    assert not store.job_dir("gone").exists()

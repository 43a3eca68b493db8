"""The export service's routes (JOBTRAIL_LEGACY_ROUTES=on), called over a real HTTP port as its clients did,
plus `expires_at` and `download_url` in the native job state."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx
import msgspec
import pytest

from jobtrail.auth import hash_key, new_key
from jobtrail.index import JobIndex
from jobtrail.keys import LegacyKeys
from jobtrail.migrations import Context, migrate
from jobtrail.workers.runner import Runner
from tests.conftest import delete_matching

ACME, GLOBEX = new_key(), new_key()
PDF = {"title": "Q1 Sales", "start_date": "2024-01-01", "end_date": "2024-01-20", "group_by": "week"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def legacy_on(settings):
    return msgspec.structs.replace(
        settings, legacy_routes="on", auth="auto", api_keys=f"acme:{hash_key(ACME)},globex:{hash_key(GLOBEX)}"
    )


@pytest.fixture
async def http(start_api, legacy_on):
    api = await start_api(legacy_on)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, headers=bearer(ACME)) as client:
        yield client


async def run(events, settings, job_id: str) -> None:
    await Runner(events, settings).run(job_id)


async def test_the_legacy_routes_are_off_unless_turned_on(client):
    assert (await client.post("/api/exports/pdf", json=PDF)).status_code == 404
    assert (await client.get("/api/exports/pdf/x")).status_code == 404
    assert (await client.delete("/api/exports/x")).status_code == 404


async def test_a_pdf_export_goes_through_every_old_route_in_the_old_shape(http, events, legacy_on):
    submitted = await http.post("/api/exports/pdf", json=PDF)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert submitted.json()["status"] == "processing" and submitted.json()["expires_at"] is None

    processing = (await http.get(f"/api/exports/pdf/{job_id}")).json()
    assert processing == {
        "job_id": job_id, "status": "processing", "filename": None, "download_url": None, "file_size_bytes": None,
        "error": None, "created_at": processing["created_at"], "completed_at": None, "expires_at": None,
    }

    await run(events, legacy_on, job_id)
    done = await http.get(f"/api/exports/pdf/{job_id}")
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "completed" and body["error"] is None
    assert body["filename"] == "q1-sales.pdf" and body["download_url"] == f"/jobs/{job_id}/artifact"
    assert stamp(body["completed_at"]) >= stamp(body["created_at"])
    assert abs(stamp(body["expires_at"]) - (time.time() + legacy_on.retention_s)) < 60
    download = await http.get(body["download_url"])
    assert download.content.startswith(b"%PDF") and len(download.content) == body["file_size_bytes"]

    assert (await http.get(f"/api/exports/zip/{job_id}")).status_code == 404, "a PDF export is not a ZIP export"
    deleted = await http.delete(f"/api/exports/{job_id}")
    assert (deleted.status_code, deleted.json()) == (200, {"job_id": job_id, "deleted": True})
    assert (await http.get(f"/api/exports/pdf/{job_id}")).status_code == 404
    assert (await http.get(f"/jobs/{job_id}")).status_code == 404
    assert (await http.delete(f"/api/exports/{job_id}")).status_code == 404


async def test_a_zip_export_and_a_natively_submitted_job_answer_on_the_old_routes(http, events, legacy_on):
    native = await http.post("/jobs", json={"kind": "export.pdf", "params": PDF})
    pdf_id = native.json()["id"]
    await run(events, legacy_on, pdf_id)
    assert (await http.get(f"/api/exports/pdf/{pdf_id}")).json()["status"] == "completed"

    zipped = await http.post("/api/exports/zip", json={"job_ids": [pdf_id], "include_history": True})
    assert zipped.status_code == 202, zipped.text
    zip_id = zipped.json()["job_id"]
    assert (await http.get(f"/jobs/{zip_id}")).json()["kind"] == "export.zip", "an ordinary job underneath"
    await run(events, legacy_on, zip_id)
    body = (await http.get(f"/api/exports/zip/{zip_id}")).json()
    assert body["status"] == "completed" and body["filename"] == f"export-{zip_id}.zip"
    assert (await http.get(body["download_url"])).content.startswith(b"PK")


async def test_bad_old_requests_get_the_native_errors(http):
    bad = await http.post("/api/exports/pdf", json={**PDF, "end_date": "2023-01-01"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_params"
    assert "end_date" in bad.json()["detail"]
    assert (await http.post("/api/exports/zip", json={"job_ids": []})).status_code == 422
    assert (await http.post("/api/exports/pdf", content=b"{", headers={"content-type": "application/json"})
            ).status_code == 400
    assert (await http.get("/api/exports/pdf/demo-job-that-is-not-there")).status_code == 404


async def test_an_idempotency_key_repeat_returns_the_same_export_with_200(http):
    first = await http.post("/api/exports/pdf", json=PDF, headers={"Idempotency-Key": "q1"})
    again = await http.post("/api/exports/pdf", json=PDF, headers={"Idempotency-Key": "q1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["job_id"] == again.json()["job_id"]


async def test_a_failed_or_cancelled_export_is_failed_with_its_error(http, events, legacy_on):
    job_id = (await http.post("/api/exports/pdf", json=PDF)).json()["job_id"]
    await http.post(f"/jobs/{job_id}/cancel")
    body = (await http.get(f"/api/exports/pdf/{job_id}")).json()
    assert (body["status"], body["error"]) == ("failed", "cancelled")
    assert body["expires_at"] is not None and body["completed_at"] is not None


async def test_another_tenants_export_is_missing_on_every_old_route(http, events, legacy_on):
    job_id = (await http.post("/api/exports/pdf", json=PDF)).json()["job_id"]
    other = {"Authorization": f"Bearer {GLOBEX}"}
    missing = (await http.get("/api/exports/pdf/no-such-export", headers=other)).json()
    for response in (
        await http.get(f"/api/exports/pdf/{job_id}", headers=other),
        await http.delete(f"/api/exports/{job_id}", headers=other),
    ):
        assert response.status_code == 404
        assert response.json() == {**missing, "detail": missing["detail"].replace("no-such-export", job_id)}
    assert (await http.get(f"/api/exports/pdf/{job_id}", headers={"Authorization": ""})).status_code == 401
    assert (await http.get(f"/api/exports/pdf/{job_id}")).status_code == 200, "the owner still has it"


async def test_an_expired_export_answers_404(start_api, legacy_on, events):
    short = msgspec.structs.replace(legacy_on, retention_s=1)
    api = await start_api(short)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(ACME)) as http:
        job_id = (await http.post("/api/exports/pdf", json=PDF)).json()["job_id"]
        await http.post(f"/jobs/{job_id}/cancel")
        assert (await http.get(f"/api/exports/pdf/{job_id}")).status_code == 200
        await asyncio.sleep(1.5)
        assert (await http.get(f"/api/exports/pdf/{job_id}")).status_code == 404


async def test_a_migrated_export_job_answers_with_its_legacy_file_and_ttl(
    http, redis_client, keys, events, prefix, redis_url
):
    legacy = f"{prefix}-legacy:"
    value = {
        "job_id": "exp-7", "status": "completed", "created_at": "2026-11-01T10:00:00", "completed_at":
        "2026-11-01T10:00:09", "filename": "report.pdf", "download_url": "/files/report.pdf",
        "file_size_bytes": 1234,
    }
    await redis_client.set(f"{legacy}export_job:exp-7", msgspec.json.encode(value), ex=3600)
    try:
        ctx = Context(redis=redis_client, keys=keys, events=events, index=JobIndex(redis_client, keys),
                      legacy=LegacyKeys(legacy))
        await migrate(ctx)
        # A migrated job belongs to no tenant: only admins see it, so ask with the open API.
    finally:
        delete_matching(redis_url, f"{legacy}*")
    job = await events.state("exp-7")
    assert job.kind == "legacy.export" and job.tenant is None
    from jobtrail.api.legacy import export_status

    body = msgspec.to_builtins(export_status(job))
    assert (body["status"], body["filename"], body["download_url"], body["file_size_bytes"]) == (
        "completed", "report.pdf", "/files/report.pdf", 1234,
    )
    assert body["completed_at"].startswith("2026-11-01T10:00:09")
    assert 3500 < stamp(body["expires_at"]) - time.time() <= 3600, "the legacy key's TTL, kept"


async def test_job_state_carries_expires_at_once_finished_and_a_download_url(client, events, settings):
    job = (await client.post("/jobs", json={"kind": "export.pdf", "params": PDF})).json()
    assert job["expires_at"] is None and job["artifact"] is None
    await run(events, settings, job["id"])
    state = (await client.get(f"/jobs/{job['id']}")).json()
    assert abs(stamp(state["expires_at"]) - (time.time() + settings.retention_s)) < 60
    assert state["artifact"]["download_url"] == f"/jobs/{job['id']}/artifact"
    listed = (await client.get("/jobs")).json()["jobs"]
    assert listed[0]["expires_at"] == state["expires_at"] or abs(
        stamp(listed[0]["expires_at"]) - stamp(state["expires_at"])
    ) < 2
    history = (await client.get(f"/jobs/{job['id']}/history")).json()["events"]
    assert "download_url" not in history[-1]["data"]["artifact"], "the event keeps what the job recorded"


async def test_a_download_url_with_a_token_downloads_without_a_key(http, events, legacy_on):
    job_id = (await http.post("/jobs", json={"kind": "export.pdf", "params": PDF})).json()["id"]
    await run(events, legacy_on, job_id)
    plain = (await http.get(f"/jobs/{job_id}")).json()["artifact"]["download_url"]
    assert (await http.get(plain, headers={"Authorization": ""})).status_code == 401
    signed = (await http.get(f"/jobs/{job_id}", params={"download_token": "true"})).json()["artifact"]
    assert signed["download_url"].startswith(f"/jobs/{job_id}/artifact?token=")
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        download = await anonymous.get(signed["download_url"])
    assert download.status_code == 200 and download.content.startswith(b"%PDF")

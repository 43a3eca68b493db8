"""/api/exports: the routes of the export service jobtrail replaced, for its clients during a switch-over.

Off unless JOBTRAIL_LEGACY_ROUTES=on. They are a thin skin over the native API: a
submission is an `export.pdf` or `export.zip` job (so `/jobs/{id}`, its history and SSE
work for it too), and status answers the old shape and status names. Access, tenancy,
limits and Idempotency-Key are those of the native routes, since the same code runs.
Migrated export jobs (kind `legacy.export`, see migrations/) answer on both status routes.

Old status names: `processing` (pending or running), `completed` (succeeded), `failed`
(failed or cancelled).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody

from jobtrail.api.common import JobId, error_responses, submit_counted, visible_job
from jobtrail.auth import Principal
from jobtrail.errors import JobNotFound
from jobtrail.eventlog import EventLog
from jobtrail.events import State
from jobtrail.jobstate import JobState
from jobtrail.limits import SubmitRate
from jobtrail.service import JobService

LEGACY_KIND = "legacy.export"  # migrations/m0001_legacy_export_jobs.py
PDF_KINDS = frozenset({"export.pdf", LEGACY_KIND})
ZIP_KINDS = frozenset({"export.zip", LEGACY_KIND})

LegacyStatus = Literal["processing", "completed", "failed"]
_STATUS: dict[State, LegacyStatus] = {
    State.PENDING: "processing",
    State.RUNNING: "processing",
    State.SUCCEEDED: "completed",
    State.FAILED: "failed",
    State.CANCELLED: "failed",
}


class ExportStatus(msgspec.Struct, frozen=True):
    """An export job in the shape the export service answered."""

    job_id: str
    status: LegacyStatus
    filename: str | None
    download_url: str | None
    file_size_bytes: int | None
    error: str | None
    created_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime | None  # null while the job runs; then when it expires (404 after)


class ExportDeleted(msgspec.Struct, frozen=True):
    job_id: str
    deleted: bool


def export_status(job: JobState) -> ExportStatus:
    """The old shape of `job`; a migrated job's file fields come from its imported result."""
    filename: str | None
    url: str | None
    size: int | None
    if job.artifact is not None:
        filename, url, size = job.artifact.name, job.artifact.download_url, job.artifact.size_bytes
    elif isinstance(job.result, dict) and job.kind == LEGACY_KIND:
        filename, url, size = job.result.get("filename"), job.result.get("download_url"), job.result.get(
            "file_size_bytes"
        )
    else:
        filename = url = size = None
    return ExportStatus(
        job_id=job.id,
        status=_STATUS[job.state],
        filename=filename,
        download_url=url,
        file_size_bytes=size,
        error=_error_text(job),
        created_at=job.created_at,
        completed_at=job.finished_at,
        expires_at=job.expires_at,
    )


def _error_text(job: JobState) -> str | None:
    if job.state is State.CANCELLED:
        return "cancelled"
    if job.error:
        return str(job.error.get("message") or job.error.get("type") or "failed")
    return None


IdempotencyKey = Annotated[
    str | None, HeaderParameter(name="Idempotency-Key", required=False, min_length=1, max_length=255)
]


async def _export_of(events: EventLog, principal: Principal, job_id: str, kinds: frozenset[str]) -> JobState:
    """The job if the principal sees it and it is an export of one of `kinds`; else JobNotFound."""
    job = await visible_job(events, principal, job_id)
    if job.kind not in kinds:
        raise JobNotFound(job_id)
    return job


class LegacyExportsController(Controller):
    path = "/api/exports"
    tags = ("legacy export service",)

    async def _submit(
        self, kind: str, params: dict[str, Any], service: JobService, principal: Principal, submit_rate: SubmitRate,
        idempotency_key: str | None,
    ) -> Response[ExportStatus]:
        job, created = await submit_counted(service, submit_rate, principal, kind, params, None, idempotency_key)
        return Response(export_status(job), status_code=202 if created else 200,
                        headers={"Location": f"/api/exports/{'pdf' if kind == 'export.pdf' else 'zip'}/{job.id}"})

    @post(
        "/pdf",
        status_code=202,
        summary="Start a PDF export (the export service's route)",
        description="The body is the old request: the params of kind `export.pdf` (`title`, `start_date`, "
        "`end_date`, `group_by`, `include_charts`, `include_tables`). Answers 202 with `job_id`; the job is an "
        "ordinary `export.pdf` job.",
        responses={
            200: ResponseSpec(data_container=ExportStatus, description="Idempotent repeat: the existing job"),
            **error_responses(400, 409, 413, 422, 429, 503),
        },
    )
    async def submit_pdf(
        self,
        data: JSONBody[dict[str, Any]],
        service: NamedDependency[JobService],
        principal: NamedDependency[Principal],
        submit_rate: NamedDependency[SubmitRate],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[ExportStatus]:
        return await self._submit("export.pdf", data, service, principal, submit_rate, idempotency_key)

    @post(
        "/zip",
        status_code=202,
        summary="Start a ZIP export (the export service's route)",
        description="The body is the old request: the params of kind `export.zip` (`job_ids`, "
        "`include_history`). Answers 202 with `job_id`.",
        responses={
            200: ResponseSpec(data_container=ExportStatus, description="Idempotent repeat: the existing job"),
            **error_responses(400, 409, 413, 422, 429, 503),
        },
    )
    async def submit_zip(
        self,
        data: JSONBody[dict[str, Any]],
        service: NamedDependency[JobService],
        principal: NamedDependency[Principal],
        submit_rate: NamedDependency[SubmitRate],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[ExportStatus]:
        return await self._submit("export.zip", data, service, principal, submit_rate, idempotency_key)

    @get("/pdf/{job_id:str}", summary="Status of a PDF export, in the old shape", responses=error_responses(404, 503))
    async def pdf_status(
        self, job_id: JobId, events: NamedDependency[EventLog], principal: NamedDependency[Principal]
    ) -> ExportStatus:
        return export_status(await _export_of(events, principal, job_id, PDF_KINDS))

    @get("/zip/{job_id:str}", summary="Status of a ZIP export, in the old shape", responses=error_responses(404, 503))
    async def zip_status(
        self, job_id: JobId, events: NamedDependency[EventLog], principal: NamedDependency[Principal]
    ) -> ExportStatus:
        return export_status(await _export_of(events, principal, job_id, ZIP_KINDS))

    @delete(
        "/{job_id:str}",
        status_code=200,
        summary="Delete an export and its file (the export service's route)",
        responses=error_responses(404, 503),
    )
    async def remove(
        self,
        job_id: JobId,
        service: NamedDependency[JobService],
        events: NamedDependency[EventLog],
        principal: NamedDependency[Principal],
    ) -> ExportDeleted:
        job = await _export_of(events, principal, job_id, PDF_KINDS | ZIP_KINDS)
        if not await service.delete(job.id, job.tenant):
            raise JobNotFound(job_id)
        return ExportDeleted(job_id=job.id, deleted=True)

"""0001: import the legacy export service's jobs, `export_job:{job_id}`, as kind `legacy.export`.

The export service kept each job as a JSON string (SET with EX), `status` one of
processing/completed/failed. A completed job's result is its file: `filename`,
`download_url`, `file_size_bytes`. See migrations/legacy.py for how statuses map.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from jobtrail.migrations import Context, Report
from jobtrail.migrations.legacy import LegacyJob, LegacyStatus, Malformed, Stamp, decode, import_jobs, to_ms

VERSION = "0001"
NAME = "legacy_export_jobs"
KIND = "legacy.export"

STATUSES: dict[str, LegacyStatus] = {"processing": "running", "completed": "succeeded", "failed": "failed"}


class ExportJob(msgspec.Struct):
    """An export job as the export service stored it (unknown fields are ignored)."""

    job_id: str | int
    status: Literal["processing", "completed", "failed"]
    created_at: Stamp
    filename: str | None = None
    download_url: str | None = None
    file_size_bytes: int | None = None
    error: str | None = None
    completed_at: Stamp | None = None


def parse(key: str, key_id: str, raw: str) -> LegacyJob:
    job = decode(raw, ExportJob)
    if str(job.job_id) != key_id:
        raise Malformed(f"job_id {job.job_id!r} does not match the key")
    result = None
    if job.status == "completed":
        result = {"filename": job.filename, "download_url": job.download_url, "file_size_bytes": job.file_size_bytes}
    return LegacyJob(
        key=key,
        id=key_id,
        kind=KIND,
        status=STATUSES[job.status],
        created_ms=to_ms(job.created_at, "created_at"),
        finished_ms=None if job.completed_at is None else to_ms(job.completed_at, "completed_at"),
        result=result,
        error=job.error,
    )


async def apply(ctx: Context) -> Report:
    return await import_jobs(ctx, ctx.legacy.export_job, parse)

"""0002: import the legacy generic jobs, `job:{id}`, as kind `legacy.job`.

Each was a JSON string, `status` one of queued/running/done/error, with a free-form
`result` and an `updated_at` that is the finish time of a done or failed job. See
migrations/legacy.py for how statuses map (a queued job is imported pending, not enqueued).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from jobtrail.migrations import Context, Report
from jobtrail.migrations.legacy import LegacyJob, LegacyStatus, Malformed, Stamp, decode, import_jobs, to_ms

VERSION = "0002"
NAME = "legacy_generic_jobs"
KIND = "legacy.job"

STATUSES: dict[str, LegacyStatus] = {"queued": "queued", "running": "running", "done": "succeeded", "error": "failed"}


class GenericJob(msgspec.Struct):
    """A job as the generic job system stored it (unknown fields are ignored)."""

    id: str | int
    status: Literal["queued", "running", "done", "error"]
    created_at: Stamp
    result: Any = None
    error: str | None = None
    updated_at: Stamp | None = None


def parse(key: str, key_id: str, raw: str) -> LegacyJob:
    job = decode(raw, GenericJob)
    if str(job.id) != key_id:
        raise Malformed(f"id {job.id!r} does not match the key")
    return LegacyJob(
        key=key,
        id=key_id,
        kind=KIND,
        status=STATUSES[job.status],
        created_ms=to_ms(job.created_at, "created_at"),
        finished_ms=None if job.updated_at is None else to_ms(job.updated_at, "updated_at"),
        result=job.result,
        error=job.error,
    )


async def apply(ctx: Context) -> Report:
    return await import_jobs(ctx, ctx.legacy.job, parse)

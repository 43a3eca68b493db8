"""/jobs/{id}/audit.pdf: the audit report of one job."""

from __future__ import annotations

import asyncio
import time

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from jobtrail.api.bounds import deadline_paused
from jobtrail.api.common import JobId, error_responses, visible_job
from jobtrail.audit import AuditBuilder
from jobtrail.audit_report import render_audit_pdf
from jobtrail.auth import Principal
from jobtrail.eventlog import EventLog


@get(
    "/jobs/{job_id:str}/audit.pdf",
    tags=["jobs"],
    media_type="application/pdf",
    summary="Audit report of a job (PDF)",
    description="The job's identity and params, its outcome, the duration of each attempt and of each phase, "
    "and a timeline of its events (time, type, attempt, summary). Durations count every event; a very long "
    "timeline shows its first and last events and every state change, and says how many it left out.",
    responses={
        200: ResponseSpec(data_container=bytes, media_type="application/pdf", description="The report"),
        **error_responses(404, 503),
    },
)
async def audit_report(
    job_id: JobId, events: NamedDependency[EventLog], principal: NamedDependency[Principal]
) -> Response[bytes]:
    builder = AuditBuilder(await visible_job(events, principal, job_id))
    # Like a stream's body, which this is but for its size header: reading a long history
    # and rendering it take their time, each page read bounded by its own socket timeout.
    async with deadline_paused():
        async for event in events.events(job_id):
            builder.add(event)
        pdf = await asyncio.to_thread(render_audit_pdf, builder.finish(int(time.time() * 1000)))
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="job-{job_id}-audit.pdf"', "Cache-Control": "no-store"},
    )

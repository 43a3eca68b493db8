"""/jobs/{id}/audit.pdf: the audit report of one job."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from app.api.schemas import ErrorBody
from app.audit import AuditBuilder
from app.audit_report import render_audit_pdf
from app.errors import JobNotFound
from app.eventlog import EventLog
from app.keys import JOB_ID_RE


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
        404: ResponseSpec(data_container=ErrorBody, description="No such job (or it has expired)"),
        503: ResponseSpec(data_container=ErrorBody, description="Redis is not answering; retry after `Retry-After` seconds"),
    },
)
async def audit_report(
    job_id: Annotated[str, Parameter(description="Job id", max_length=128)], events: NamedDependency[EventLog]
) -> Response[bytes]:
    if not JOB_ID_RE.match(job_id):
        raise JobNotFound(job_id)
    builder = AuditBuilder(await events.state(job_id))
    async for event in events.events(job_id):
        builder.add(event)
    pdf = await asyncio.to_thread(render_audit_pdf, builder.finish(int(time.time() * 1000)))
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="job-{job_id}-audit.pdf"', "Cache-Control": "no-store"},
    )

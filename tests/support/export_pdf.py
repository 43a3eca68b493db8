"""An `export.pdf` job submitted and run in this process by a real Runner, and the PDF it wrote."""

from __future__ import annotations

from pathlib import Path

from jobtrail.events import EventType, SubmittedData
from jobtrail.jobstate import JobState
from jobtrail.registry import validate_params
from jobtrail.workers.runner import Runner

QUARTER = {"title": "Q1 Sales", "start_date": "2024-01-01", "end_date": "2024-03-31"}


async def submit(events, job_id: str, params: dict) -> None:
    data = SubmittedData(kind="export.pdf", params=validate_params("export.pdf", params), max_attempts=1)
    await events.append(job_id, EventType.SUBMITTED, data)


async def run(events, settings, job_id: str, **params) -> JobState:
    await submit(events, job_id, {**QUARTER, **params})
    await Runner(events, settings).run(job_id)
    return await events.state(job_id)


def artifact_bytes(settings, job: JobState) -> bytes:
    assert job.artifact is not None, f"job {job.id} is {job.state} without an artifact: {job.error}"
    return (Path(settings.artifact_dir) / job.id / job.artifact.name).read_bytes()

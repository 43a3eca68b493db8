"""`export.zip`: the artifacts of finished jobs (and, optionally, their histories) in one ZIP.

Files are streamed into the archive chunk by chunk, so memory stays bounded whatever
their size; each copied artifact's SHA-256 is checked against the one its job recorded.
A source job that is missing, unfinished or without a file does not fail the export:
`manifest.json` in the archive says what became of every job asked for.

Source jobs are read through the context (`ctx.job`, `ctx.history`), which sees them
as the export's submitter does through the API: another tenant's job is `missing`,
with no state, kind or files, exactly like an id no job has.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, Annotated, Any

import msgspec

from jobtrail.errors import JobNotFound
from jobtrail.events import Artifact, State
from jobtrail.jobstate import JobState
from jobtrail.keys import JOB_ID_RE
from jobtrail.registry import kind
from jobtrail.workers.context import JobContext

MAX_JOBS = 100
_CHUNK = 1 << 18  # bytes of an artifact read, hashed and compressed at a time
_HISTORY_PAGE = 500  # events read from Redis and written to the archive at a time
_COLLECT = (0.0, 0.05)
_BUNDLE = (0.05, 0.98)  # 1.0 once the manifest is in
_encode = msgspec.json.Encoder().encode

JobId = Annotated[str, msgspec.Meta(pattern=JOB_ID_RE.pattern)]


class ExportZipParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_ids: Annotated[list[JobId], msgspec.Meta(min_length=1, max_length=MAX_JOBS)]
    include_history: bool = False

    def __post_init__(self) -> None:
        repeated = sorted(job_id for job_id, times in Counter(self.job_ids).items() if times > 1)
        if repeated:
            raise ValueError(f"job_ids must be unique; repeated: {', '.join(repeated)}")


class SourceStatus(enum.StrEnum):
    INCLUDED = "included"
    MISSING = "missing"  # no such job: never existed, deleted, or expired
    NOT_FINISHED = "not_finished"  # pending or running
    NOT_SUCCEEDED = "not_succeeded"  # failed or cancelled
    NO_ARTIFACT = "no_artifact"  # succeeded without producing a file
    ARTIFACT_FILE_MISSING = "artifact_file_missing"  # recorded, but the file is gone
    CHECKSUM_MISMATCH = "checksum_mismatch"  # copied, but not the bytes the job recorded


class ManifestFile(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str  # path inside the ZIP
    size_bytes: int
    sha256: str
    content_type: str | None = None
    events: int | None = None  # for a history


class ManifestEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    job_id: str
    status: SourceStatus
    state: State | None = None
    kind: str | None = None
    detail: str | None = None
    recorded: Artifact | None = None  # the artifact as the job recorded it, on a mismatch
    files: list[ManifestFile] = msgspec.field(default_factory=list)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    export_job_id: str
    created_at: datetime
    include_history: bool
    jobs: list[ManifestEntry]


Report = Callable[[float, str], Awaitable[None]]


def _member(name: str, when: datetime | None, size: int = 0) -> zipfile.ZipInfo:
    stamp = (when or datetime.now(UTC)).timetuple()[:6]
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size  # an estimate: lets zipfile decide on ZIP64 before the first byte
    return info


def _copy_chunk(source: IO[bytes], dest: IO[bytes], digest: Any) -> int:
    chunk = source.read(_CHUNK)
    digest.update(chunk)
    dest.write(chunk)
    return len(chunk)


async def inspect(ctx: JobContext, job_id: str) -> tuple[ManifestEntry, JobState | None]:
    """What the export can take from one source job (one HGETALL)."""
    try:
        job = await ctx.job(job_id)
    except JobNotFound:
        return ManifestEntry(job_id=job_id, status=SourceStatus.MISSING, detail="no such job (or it expired)"), None
    if job.state in (State.PENDING, State.RUNNING):
        status = SourceStatus.NOT_FINISHED
    elif job.state is not State.SUCCEEDED:
        status = SourceStatus.NOT_SUCCEEDED
    elif job.artifact is None:
        status = SourceStatus.NO_ARTIFACT
    else:
        status = SourceStatus.INCLUDED
    return ManifestEntry(job_id=job_id, status=status, state=job.state, kind=job.kind), job


async def copy_artifact(
    ctx: JobContext, archive: zipfile.ZipFile, entry: ManifestEntry, job: JobState, report: Report
) -> None:
    """Stream the job's artifact into the archive, hashing it; a gone file or a mismatch goes in `entry`."""
    artifact = job.artifact
    assert artifact is not None and ctx.artifacts is not None
    try:
        source = open(ctx.artifacts.path(job.id, artifact), "rb")  # noqa: SIM115, ASYNC230 - closed below; only the copy is slow, and runs in a thread
    except FileNotFoundError:
        entry.status = SourceStatus.ARTIFACT_FILE_MISSING
        entry.detail = f"the job recorded {artifact.name!r}, but the file is gone (swept, or on another host)"
        return
    info = _member(f"{job.id}/{artifact.name}", job.finished_at, artifact.size_bytes)
    digest, size = hashlib.sha256(), 0
    with source, archive.open(info, "w") as dest:
        # Reading, hashing and compressing run in a thread, one chunk at a time.
        while copied := await asyncio.to_thread(_copy_chunk, source, dest, digest):
            size += copied
            await report(size / max(artifact.size_bytes, 1), f"{info.filename}: {size} bytes")
    sha256 = digest.hexdigest()
    entry.files.append(ManifestFile(info.filename, size, sha256, content_type=artifact.content_type))
    if (size, sha256) != (artifact.size_bytes, artifact.sha256):
        entry.status = SourceStatus.CHECKSUM_MISMATCH
        entry.recorded = artifact
        entry.detail = "the file in this archive is not the one the job recorded (size or SHA-256 differ)"


async def copy_history(
    ctx: JobContext, archive: zipfile.ZipFile, entry: ManifestEntry, job: JobState, report: Report
) -> None:
    """Write the job's events as NDJSON (as `GET /jobs/{id}/history` sends them), a page at a time."""
    info = _member(f"{job.id}/history.ndjson", job.updated_at)
    digest, size, count = hashlib.sha256(), 0, 0
    lines: list[bytes] = []
    with archive.open(info, "w") as dest:

        def flush() -> None:
            nonlocal size
            block = b"".join(lines)
            digest.update(block)
            dest.write(block)
            size += len(block)
            lines.clear()

        try:
            async for event in ctx.history(job.id, page_size=_HISTORY_PAGE):
                lines.append(_encode(event.out()) + b"\n")
                count += 1
                if len(lines) == _HISTORY_PAGE:
                    flush()
                    await report(count / max(job.event_count, 1), f"{info.filename}: {count} events")
        except JobNotFound:
            entry.detail = "the job was deleted (or expired) while its history was being exported"
        flush()
    entry.files.append(ManifestFile(info.filename, size, digest.hexdigest(), events=count))


@kind("export.zip", ExportZipParams, phases=["collect", "bundle"])
async def run_export_zip(params: ExportZipParams, ctx: JobContext) -> dict[str, Any]:
    """The artifacts (and optionally the histories) of finished jobs in one ZIP."""
    n = len(params.job_ids)
    await ctx.phase("collect", f"checking {n} jobs")
    sources: list[tuple[ManifestEntry, JobState | None]] = []
    for i, job_id in enumerate(params.job_ids, 1):
        sources.append(await inspect(ctx, job_id))
        await ctx.progress(_COLLECT[1] * i / n, job_id, phase="collect", current=i, total=n)

    work = [(entry, job, copy_artifact) for entry, job in sources if entry.status is SourceStatus.INCLUDED]
    if params.include_history:
        work += [(entry, job, copy_history) for entry, job in sources if job is not None]
    work.sort(key=lambda item: params.job_ids.index(item[0].job_id))  # each job's files together
    await ctx.phase("bundle", f"{len(work)} files from {n} jobs")
    done = 0

    async def report(within: float, message: str) -> None:
        fraction = (done + min(within, 1.0)) / max(len(work), 1)
        await ctx.progress(_BUNDLE[0] + (_BUNDLE[1] - _BUNDLE[0]) * fraction, message, phase="bundle",
                           current=done, total=len(work))

    with ctx.artifact(f"export-{ctx.job_id}.zip", "application/zip") as file:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for entry, job, copy in work:
                assert job is not None
                await copy(ctx, archive, entry, job, report)
                done += 1
                await report(0.0, f"{done} of {len(work)} files")
            manifest = Manifest(
                export_job_id=ctx.job_id, created_at=datetime.now(UTC), include_history=params.include_history,
                jobs=[entry for entry, _ in sources],
            )
            archive.writestr(_member("manifest.json", None), msgspec.json.format(_encode(manifest), indent=2))
        await ctx.progress(1.0, f"{done} files", phase="bundle", current=done, total=len(work))
    statuses = Counter(entry.status.value for entry, _ in sources)
    return {"files": done + 1, "jobs": n, "statuses": dict(sorted(statuses.items()))}

"""0003: give every job written before incarnations existed its `incarnation`.

The append script records the id of a job's `submitted` event in its hash as the job's
incarnation, and fences every runner write by it (a deleted and re-submitted job is a new
incarnation). A hash written before that has none: it is not fenced, and `jobtrail repair
--check` reports it as differing from the fold of its stream, which does record it. This
migration sets the field to the first entry of the job's stream when that entry is the
job's `submitted` (HSETNX: a field written meanwhile is kept). A job whose stream no longer
starts with `submitted` (trimmed by hand) is listed as skipped and left alone.

Round trips: a SCAN page of job hashes, one pipeline of HEXISTS, one of XRANGE (first
entry) for those without the field, one of HSETNX.
"""

from __future__ import annotations

from jobtrail.events import entry_type
from jobtrail.migrations import Context, Report, Skipped
from jobtrail.scan import scan_batches

VERSION = "0003"
NAME = "job_incarnations"
SCAN_COUNT = 500


async def apply(ctx: Context) -> Report:
    report = Report()
    seen: set[str] = set()
    pattern = ctx.keys.job("*")
    async for found in scan_batches(ctx.redis, pattern, SCAN_COUNT, "hash"):
        hashes = [key for key in found if key not in seen and key.endswith("}")]
        seen.update(hashes)
        await _backfill(ctx, report, hashes)
    return report


async def _backfill(ctx: Context, report: Report, hashes: list[str]) -> None:
    if not hashes:
        return
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for key in hashes:
            pipe.hexists(key, "incarnation")
        has = await pipe.execute()
    report.already_imported += sum(1 for h in has if h)
    missing = [ctx.keys.job_id_of(key) for key, h in zip(hashes, has, strict=True) if not h]
    if not missing:
        return
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for job_id in missing:
            pipe.xrange(ctx.keys.events(job_id), count=1)
        firsts = await pipe.execute()
    writes: list[tuple[str, str]] = []
    for job_id, first in zip(missing, firsts, strict=True):
        if not first or entry_type(first[0][1]) != "submitted":
            report.skipped.append(Skipped(ctx.keys.job(job_id), "its stream does not start with `submitted`"))
            continue
        writes.append((job_id, first[0][0]))
    if ctx.dry_run or not writes:
        report.imported += len(writes)
        return
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for job_id, submitted_id in writes:
            pipe.hsetnx(ctx.keys.job(job_id), "incarnation", submitted_id)
        await pipe.execute()
    report.imported += len(writes)

"""0004: record every tenant that already has a job index in `keys.tenants()`.

The background index sweep (app/index_sweep.py) prunes expired jobs from the global index
and from each tenant's, and finds the tenants in that set, which submissions fill from now
on. A tenant whose index was written before the set existed would not be swept until it
submits again; this migration adds them. SADD is idempotent.

Round trips: a SCAN page of tenant indexes, then one SADD per page.
"""

from __future__ import annotations

from jobtrail.migrations import Context, Report
from jobtrail.scan import scan_batches

VERSION = "0004"
NAME = "tenant_set"
SCAN_COUNT = 500


async def apply(ctx: Context) -> Report:
    report = Report()
    known = await ctx.redis.smembers(ctx.keys.tenants())
    suffix = ctx.keys.tenant_index("")[-len("}:jobs"):]  # `}:jobs`
    async for found in scan_batches(ctx.redis, ctx.keys.tenant_index("*"), SCAN_COUNT, "zset"):
        tenants = {ctx.keys.tenant_of(key) for key in found if key.endswith(suffix)} - known
        if tenants and not ctx.dry_run:
            await ctx.redis.sadd(ctx.keys.tenants(), *tenants)
        report.imported += len(tenants)
        known |= tenants
    report.already_imported = len(known) - report.imported
    return report

"""The bench's job kinds, loaded by the jobtrail processes it starts (JOBTRAIL_KINDS=bench.kinds).

`bench.noop` is the trivial job of W3; `bench.progress` reports `count` progress events,
`interval_ms` apart (0: as fast as the worker can write them; W1), or paced at a rate
(the fan-out rows). The BullMQ side (bench/node/*.mjs) runs the same two.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import msgspec

from jobtrail.registry import kind
from jobtrail.workers.context import JobContext


class NoopParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ProgressParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100
    interval_ms: Annotated[float, msgspec.Meta(ge=0)] = 0
    # Epoch ms to start reporting at, so the fan-out rows' clients are all connected by then.
    start_at_ms: int = 0


@kind("bench.noop", NoopParams)
async def run_noop(params: NoopParams, ctx: JobContext) -> dict[str, int]:
    return {}


@kind("bench.progress", ProgressParams)
async def run_progress(params: ProgressParams, ctx: JobContext) -> dict[str, int]:
    """Paced by a clock, not by sleeps added up, so the rate holds when a write is slow."""
    await asyncio.sleep(max(params.start_at_ms / 1000 - time.time(), 0))
    start = time.monotonic()
    for step in range(1, params.count + 1):
        if params.interval_ms:
            await asyncio.sleep(max(start + step * params.interval_ms / 1000 - time.monotonic(), 0))
        # Below 1.0 until the end: a report of 1.0 is never coalesced, the others are not either
        # here, as the bench's workers run with JOBTRAIL_PROGRESS_INTERVAL_S=0.
        await ctx.progress(step / (params.count + 1), f"step {step}/{params.count}", current=step, total=params.count)
    return {"count": params.count}

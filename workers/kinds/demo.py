"""`demo`: counts through steps, sleeping between them; fails on request.

Useful to see progress stream and to rehearse retries and cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec

from jobtrail.registry import kind
from jobtrail.workers.context import JobContext


class DemoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    steps: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    delay_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 250
    fail_at_step: Annotated[int, msgspec.Meta(ge=1)] | None = None


class DemoFailure(Exception):
    """The failure `fail_at_step` asks for."""


@kind("demo", DemoParams)
async def run_demo(params: DemoParams, ctx: JobContext) -> dict[str, int]:
    """Counts through `steps`, `delay_ms` apart; fails at `fail_at_step` if asked."""
    for step in range(1, params.steps + 1):
        if step == params.fail_at_step:
            raise DemoFailure(f"failing at step {step} as asked (fail_at_step={params.fail_at_step})")
        await asyncio.sleep(params.delay_ms / 1000)
        await ctx.progress(step / params.steps, f"step {step}/{params.steps}", current=step, total=params.steps)
    return {"steps": params.steps}

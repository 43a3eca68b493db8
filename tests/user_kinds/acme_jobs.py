"""Acme's own job kinds, written the way a user of jobtrail writes them."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec

import jobtrail


class InvoiceParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    lines: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3


@jobtrail.kind("acme.invoice", InvoiceParams, phases=["collect", "render", "upload"])
async def make_invoice(params: InvoiceParams, ctx: jobtrail.JobContext) -> dict[str, object]:
    """An invoice for `customer`, one line at a time."""
    await ctx.phase("collect", f"{params.lines} lines for {params.customer}")
    for line in range(1, params.lines + 1):
        await asyncio.sleep(0.01)
        await ctx.progress(0.6 * line / params.lines, f"line {line}", phase="collect", current=line, total=params.lines)
    await ctx.phase("render")
    await ctx.progress(0.9, "rendered", phase="render")
    await ctx.phase("upload")
    await ctx.progress(1.0, "uploaded", phase="upload")
    return {"customer": params.customer, "lines": params.lines}


class NoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


@jobtrail.kind("acme.typo", NoParams, phases=["collect", "render"])
async def enter_a_phase_it_did_not_declare(params: NoParams, ctx: jobtrail.JobContext) -> None:
    """Goes from `collect` to a phase its kind does not declare."""
    await ctx.phase("collect")
    await ctx.progress(0.5, phase="rendering")

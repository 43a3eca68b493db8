"""`export.pdf`: a multi-page PDF report of a deterministic synthetic sales data set.

Phases: `collect` (the numbers, group by group), `render` (reportlab lays out the pages
in a worker thread, so the event loop keeps serving; progress follows the pages), and
`write` (the finished PDF into the job's artifact). The same params give the same
numbers and, since reportlab runs with `invariant=1`, a byte-identical PDF.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import re
import threading
import unicodedata
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from reportlab.graphics import shapes
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import cm
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from jobtrail import fonts
from jobtrail.registry import kind
from jobtrail.workers.context import JobContext

MAX_YEARS = 5
REGIONS = ("North", "East", "South", "West")
_WRITE_CHUNK = 1 << 18

# Where each phase sits on the job's 0..1 progress.
_COLLECT = (0.0, 0.2)
_LAYOUT = (0.2, 0.3)  # building the flowables, group by group
_RENDER = (0.3, 0.9)  # reportlab laying out and drawing the pages
_WRITE = (0.9, 1.0)


def years_after(start: date, years: int) -> date:
    """The same day `years` later (28 February for a 29 February with no leap year)."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        return start.replace(year=start.year + years, day=28)


class ExportPdfParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    start_date: date
    end_date: date
    group_by: Literal["day", "week", "month"] = "week"
    include_charts: bool = True
    include_tables: bool = True

    def __post_init__(self) -> None:
        if not self.title.strip():
            raise ValueError("title must not be blank")
        if self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        if self.end_date > years_after(self.start_date, MAX_YEARS):
            raise ValueError(
                f"the range {self.start_date} to {self.end_date} is longer than {MAX_YEARS} years; split the export"
            )
        if not (self.include_charts or self.include_tables):
            raise ValueError("include_charts and include_tables are both false: the report would have no content")


# --- the data set ---

_MASK = (1 << 64) - 1
_WEEKDAY_PCT = (100, 104, 108, 110, 125, 80, 60)  # Monday .. Sunday
_MONTH_PCT = (85, 88, 95, 100, 104, 108, 100, 96, 105, 110, 125, 140)
_REGION_ORDERS = (120, 90, 70, 55)  # typical orders a day


class SplitMix64:
    """A tiny PRNG whose sequence is fixed forever (`random`'s may change between Pythons)."""

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def below(self, n: int) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return (z ^ (z >> 31)) % n


def seed_of(params: ExportPdfParams) -> int:
    """The data set's seed: a SHA-256 of the params that define the data (not the layout)."""
    data = msgspec.json.encode([params.title, params.start_date, params.end_date])
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


class Group(NamedTuple):
    label: str
    start: date
    end: date
    orders: tuple[int, ...]  # per region, as REGIONS
    revenue_cents: tuple[int, ...]


def group_spans(start: date, end: date, group_by: str) -> Iterator[tuple[str, date, date]]:
    """(label, first day, last day) of each group, clipped to the range."""
    day = start
    while day <= end:
        if group_by == "day":
            last, label = day, day.isoformat()
        elif group_by == "week":
            last = day + timedelta(days=6 - day.weekday())
            iso = day.isocalendar()
            label = f"Week {iso.year}-W{iso.week:02d}"
        else:
            last = day.replace(day=calendar.monthrange(day.year, day.month)[1])
            label = f"{calendar.month_name[day.month]} {day.year}"
        last = min(last, end)
        yield label, day, last
        day = last + timedelta(days=1)


def collect_group(rng: SplitMix64, label: str, first: date, last: date) -> Group:
    """Orders and revenue per region over the group's days; integers only, so exact everywhere."""
    orders = [0] * len(REGIONS)
    revenue = [0] * len(REGIONS)
    day = first
    while day <= last:
        for i, base in enumerate(_REGION_ORDERS):
            count = base * _WEEKDAY_PCT[day.weekday()] * _MONTH_PCT[day.month - 1] // 10_000 + rng.below(base // 4 + 1)
            orders[i] += count
            revenue[i] += count * (2_500 + rng.below(1_500))
        day += timedelta(days=1)
    return Group(label, first, last, tuple(orders), tuple(revenue))


# --- the document ---

_STYLES = fonts.stylesheet()
_TABLE_STYLE = TableStyle([
    ("FONT", (0, 0), (-1, -1), fonts.SANS),
    ("FONT", (0, 0), (-1, 0), fonts.SANS_BOLD),
    ("FONT", (0, -1), (-1, -1), fonts.SANS_BOLD),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde4ee")),
    ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
])


def money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def region_table(orders: tuple[int, ...], revenue: tuple[int, ...]) -> Table:
    total_orders, total_revenue = sum(orders), sum(revenue)
    rows: list[list[str]] = [["Region", "Orders", "Revenue", "Avg order", "Share"]]
    for name, count, cents in zip(REGIONS, orders, revenue, strict=True):
        share = f"{cents * 100 / total_revenue:.1f} %" if total_revenue else "-"
        rows.append([name, f"{count:,}", money(cents), money(cents // count) if count else "-", share])
    average = money(total_revenue // total_orders) if total_orders else "-"
    rows.append(["Total", f"{total_orders:,}", money(total_revenue), average, "100.0 %"])
    table = Table(rows, colWidths=[3 * cm, 2.5 * cm, 3.5 * cm, 3 * cm, 2.2 * cm], hAlign="LEFT")
    table.setStyle(_TABLE_STYLE)
    return table


def chart_scale(groups: list[Group]) -> tuple[int, int]:
    """(top, step) of the revenue axis in whole dollars, one for every group's chart, so bars compare.

    The top is the largest region's revenue in any group rounded up to a step of 1, 2,
    2.5 or 5 times a power of ten, with at most 5 steps.
    """
    largest = max((cents // 100 for group in groups for cents in group.revenue_cents), default=0)
    step = 1
    while True:
        for factor in (1, 2, 2.5, 5):
            candidate = int(step * factor)
            if candidate * 5 >= largest:
                return max(candidate, -(-largest // candidate) * candidate), candidate
        step *= 10


def _dollars(value: float) -> str:
    return f"${value / 1000:,.0f}k" if value >= 1000 else f"${value:,.0f}"


def revenue_chart(group: Group, scale: tuple[int, int]) -> Drawing:
    """Revenue per region, on the report's one `scale` (chart_scale), with a labelled y axis."""
    drawing = Drawing(14 * cm, 5.4 * cm)
    chart = VerticalBarChart()
    # types-reportlab declares a chart's geometry int; reportlab takes points as floats.
    chart.x, chart.y, chart.width, chart.height = 2.4 * cm, 0.8 * cm, 11.2 * cm, 4.2 * cm  # type: ignore[assignment]
    chart.data = [[cents // 100 for cents in group.revenue_cents]]
    chart.categoryAxis.categoryNames = list(REGIONS)
    chart.categoryAxis.labels.fontName = fonts.SANS
    chart.valueAxis.valueMin, chart.valueAxis.valueMax, chart.valueAxis.valueStep = 0, *scale
    chart.valueAxis.labels.fontName = fonts.SANS
    chart.valueAxis.labelTextFormat = _dollars
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = colors.HexColor("#dddddd")
    chart.bars[0].fillColor = colors.HexColor("#4a78b5")
    drawing.add(chart)
    label = String(0, 0, "Revenue (USD)", fontName=fonts.SANS, fontSize=8, textAnchor="middle")
    # Rotated a quarter turn to run up the axis, centred on it.
    drawing.add(shapes.Group(label, transform=(0, 1, -1, 0, 0.35 * cm, chart.y + chart.height / 2)))
    return drawing


def title_page(params: ExportPdfParams, groups: list[Group], seed: int) -> list[Flowable]:
    orders = tuple(sum(g.orders[i] for g in groups) for i in range(len(REGIONS)))
    revenue = tuple(sum(g.revenue_cents[i] for g in groups) for i in range(len(REGIONS)))
    return [
        Spacer(1, 5 * cm),
        Paragraph(fonts.markup(params.title, fonts.SANS_BOLD), _STYLES["Title"]),
        Paragraph(f"{params.start_date} to {params.end_date}, by {params.group_by}: {len(groups)} groups",
                  _STYLES["Heading3"]),
        Spacer(1, 1 * cm),
        region_table(orders, revenue),
        Spacer(1, 1 * cm),
        Paragraph(f"Synthetic data set {seed:016x}. Generated by jobtrail (export.pdf).", _STYLES["Italic"]),
        PageBreak(),
    ]


def group_section(group: Group, params: ExportPdfParams, scale: tuple[int, int]) -> Flowable:
    days = (group.end - group.start).days + 1
    parts: list[Flowable] = [
        Paragraph(fonts.markup(group.label, fonts.SANS_BOLD), _STYLES["Heading2"]),
        Paragraph(f"{group.start} to {group.end} ({days} day{'s' if days != 1 else ''})", _STYLES["Normal"]),
        Spacer(1, 0.3 * cm),
    ]
    if params.include_tables:
        parts += [region_table(group.orders, group.revenue_cents), Spacer(1, 0.3 * cm)]
    if params.include_charts:
        parts += [revenue_chart(group, scale), Spacer(1, 0.3 * cm)]
    return KeepTogether(parts)


class RenderStopped(Exception):
    """Raised inside the render thread when the job stopped waiting for it."""


class RenderWatch:
    """reportlab's progress callback: runs in the render thread, wakes the event loop.

    At each new page the thread waits (briefly, bounded) until the loop has reported
    the progress so far. Otherwise a thread holding the GIL on a busy machine can draw
    every page before the loop runs once, and the job's progress jumps from 0 to done.
    """

    PAGE_WAIT_S = 1.0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.woken = asyncio.Event()
        self.stop = threading.Event()
        self.reported = threading.Event()
        self.total = 1
        self.done = 0
        self.page = 0

    def __call__(self, what: str, value: int) -> None:
        if self.stop.is_set():
            raise RenderStopped("the job stopped waiting for this render")
        if what == "SIZE_EST":
            self.total = max(value, 1)
        elif what == "PROGRESS":
            self.done = max(self.done, value)  # a split flowable can step the count back
        elif what == "PAGE":
            self.page = value
            self.reported.clear()
            self.loop.call_soon_threadsafe(self.woken.set)
            self.reported.wait(self.PAGE_WAIT_S)
            return
        else:
            return
        self.loop.call_soon_threadsafe(self.woken.set)


def build_pdf(flowables: list[Flowable], params: ExportPdfParams, watch: RenderWatch) -> tuple[bytes, int]:
    """Lay out and draw the document (CPU-bound: run in a thread); returns (PDF, pages)."""
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer, pagesize=A4, invariant=1, title=params.title, author="jobtrail",
        subject=f"{params.start_date} to {params.end_date} by {params.group_by}", creator="jobtrail export.pdf",
    )
    footer = f"{params.title} - {params.start_date} to {params.end_date}"

    def on_page(canvas: Any, document: Any) -> None:
        fonts.draw_string(canvas, 2 * cm, 1.2 * cm, footer[:120], fonts.SANS, 8)
        fonts.draw_right_string(canvas, A4[0] - 2 * cm, 1.2 * cm, f"page {document.page}", fonts.SANS, 8)

    doc.setProgressCallBack(watch)
    doc.build(flowables, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue(), doc.page


# Bytes of the name's stem: a file system allows 255 per name, and the artifact's
# temporary name (app/artifacts.py) adds 40 to it.
_NAME_BYTES = 160


def artifact_name(title: str) -> str:
    """The title as a file name: its letters and digits in any script, lower case, `-` between words.

    "Отчёт 売上 — Q1 ✓" gives `отчёт-売上-q1.pdf` (symbols and punctuation go). The
    download's Content-Disposition carries it as UTF-8, with an ASCII fallback.
    """
    words = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFC", title)).strip("-").lower()
    stem = words.encode()[:_NAME_BYTES].decode(errors="ignore").strip("-")
    return f"{stem or 'report'}.pdf"


def _at(span: tuple[float, float], fraction: float) -> float:
    return span[0] + (span[1] - span[0]) * min(max(fraction, 0.0), 1.0)


async def _render(ctx: JobContext, flowables: list[Flowable], params: ExportPdfParams) -> tuple[bytes, int]:
    """Run build_pdf in a thread, reporting its progress; a stopped job stops the thread too."""
    watch = RenderWatch(asyncio.get_running_loop())
    build = asyncio.ensure_future(asyncio.to_thread(build_pdf, flowables, params, watch))
    try:
        while not build.done():
            woken = asyncio.ensure_future(watch.woken.wait())
            try:
                await asyncio.wait({build, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            watch.woken.clear()
            fraction = _at(_RENDER, watch.done / watch.total)
            await ctx.progress(fraction, f"page {watch.page}", phase="render", current=watch.page)
            watch.reported.set()
        return build.result()
    finally:
        # Never leave the thread drawing for a job that is over: it stops at its next flowable.
        watch.stop.set()
        watch.reported.set()  # release a thread waiting at a page
        await asyncio.wait({build})
        if not build.cancelled():
            build.exception()  # the handler's own exception is the one that matters


@kind("export.pdf", ExportPdfParams, phases=["collect", "render", "write"])
async def run_export_pdf(params: ExportPdfParams, ctx: JobContext) -> dict[str, Any]:
    """A PDF sales report of a synthetic data set, from `start_date` to `end_date`."""
    seed = seed_of(params)
    rng = SplitMix64(seed)
    spans = list(group_spans(params.start_date, params.end_date, params.group_by))
    total = len(spans)

    await ctx.phase("collect", f"{total} groups by {params.group_by}")
    groups: list[Group] = []
    for i, span in enumerate(spans, 1):
        groups.append(collect_group(rng, *span))
        await ctx.progress(_at(_COLLECT, i / total), span[0], phase="collect", current=i, total=total)
        if i % 100 == 0:
            await asyncio.sleep(0)  # coalesced progress does not yield; let others run

    await ctx.phase("render", f"laying out {total} groups")
    flowables = title_page(params, groups, seed)
    scale = chart_scale(groups)
    for i, group in enumerate(groups, 1):
        flowables.append(group_section(group, params, scale))
        await ctx.progress(_at(_LAYOUT, i / total), group.label, phase="render", current=i, total=total)
    pdf, pages = await _render(ctx, flowables, params)

    await ctx.phase("write", f"{pages} pages, {len(pdf)} bytes")
    view = memoryview(pdf)
    with ctx.artifact(artifact_name(params.title), "application/pdf") as file:
        for offset in range(0, len(pdf), _WRITE_CHUNK):
            end = min(offset + _WRITE_CHUNK, len(pdf))
            file.write(view[offset:end])
            await ctx.progress(_at(_WRITE, end / len(pdf)), f"{end} of {len(pdf)} bytes", phase="write",
                               current=end, total=len(pdf))
    return {
        "pages": pages,
        "groups": total,
        "orders": sum(sum(g.orders) for g in groups),
        "revenue_cents": sum(sum(g.revenue_cents) for g in groups),
        "seed": f"{seed:016x}",
    }

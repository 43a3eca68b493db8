"""The audit report of one job as a PDF (reportlab platypus), from an `Audit` (app/audit.py).

Rendering is CPU work with no I/O: the API reads the events first, then calls
`render_audit_pdf` in a thread.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import msgspec
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import CondPageBreak, LongTable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from jobtrail import fonts
from jobtrail.audit import Audit, Omitted, duration, summary
from jobtrail.events import EventType

# Set in the fonts of app/fonts.py, so params, messages and errors in any script print.
_STYLES = fonts.stylesheet()
_BODY = _STYLES["BodyText"]
_CELL = ParagraphStyle("cell", parent=_BODY, fontSize=7.5, leading=9)
_MONO = ParagraphStyle("mono", parent=_CELL, fontName=fonts.MONO)
_NOTE = ParagraphStyle("note", parent=_CELL, textColor=colors.HexColor("#555555"), fontName=fonts.SANS_OBLIQUE)
_GRID: list[tuple[Any, ...]] = [  # TableStyle commands: (name, start cell, end cell, *values)
    ("FONT", (0, 0), (-1, -1), fonts.SANS, 7.5),
    ("FONT", (0, 0), (-1, 0), fonts.SANS_BOLD, 7.5),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#bbbbbb")),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
]
_WIDTH = A4[0] - 30 * mm
# A timestamp column: "2023-11-14 22:13:20.250" in 7.5 pt DejaVu Sans is 34 mm, plus padding.
_TIME_W = 39 * mm
# How much of a section's body must fit below its heading (see _section).
_KEEP = 30 * mm


def _time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _between(start: int | None, end: int | None) -> str:
    return duration(end - start) if start is not None and end is not None else "—"


def _para(text: str, style: ParagraphStyle = _CELL) -> Paragraph:
    return Paragraph(fonts.markup(text, style.fontName), style)


def _json(value: Any, limit: int = 4000) -> str:
    text = msgspec.json.format(msgspec.json.encode(value), indent=1).decode()
    return text if len(text) <= limit else text[:limit] + " …"


def _table(rows: list[list[Any]], widths: list[float], *, long: bool = False) -> Table:
    table = (LongTable if long else Table)(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle(_GRID))
    return table


def _section(title: str, body: list[Flowable], level: int = 2) -> list[Flowable]:
    """A heading and its body; the heading never ends a page on its own.

    Unless the heading and the start of its body (up to _KEEP of it: a table's header
    and first rows, a paragraph's first lines) fit below it, the page breaks first. A
    keepWithNext would move a long table, and the heading with it, whole to the next
    page, leaving the rest of this one blank.
    """
    style = _STYLES[f"Heading{level}"]
    heading = _para(title, style)
    start = 0.0
    for flowable in body:
        if start >= _KEEP:
            break
        start += flowable.wrap(_WIDTH, A4[1])[1]
    need = heading.wrap(_WIDTH, A4[1])[1] + style.spaceBefore + style.spaceAfter + min(start, _KEEP)
    return [CondPageBreak(need), heading, *body]


def _identity(a: Audit) -> list[Flowable]:
    job = a.job
    end = a.finished_at if a.finished_at is not None else a.now_ms
    suffix = "" if a.finished_at is not None else " (so far)"
    counts = ", ".join(f"{t} {n:,}" for t, n in a.counts.items())
    rows: list[list[Any]] = [
        ["Job id", job.id],
        ["Kind", _para(job.kind)],
        ["Outcome", _outcome_line(a)],
        ["Attempts", f"{len(a.attempts)} of at most {job.max_attempts}"],
        ["Submitted", _time(a.first_at)],
        ["First started", _time(a.first_started_at)],
        ["Finished", _time(a.finished_at)],
        ["Queued", _between(a.first_at, a.first_started_at if a.first_started_at is not None else end)],
        ["Running" + suffix, duration(a.running_ms()) + " (all attempts, without retry waits)" if a.attempts else "—"],
    ]
    if a.waits:
        rows.append(["Waiting to retry" + suffix, f"{duration(a.waiting_ms())} ({len(a.waits)} "
                     f"wait{'s' if len(a.waits) != 1 else ''})"])
    rows += [
        ["Total" + suffix, _between(a.first_at, end)],
        ["Events", _para(f"{a.event_count:,} ({counts})")],
        ["Last event id", job.last_event_id],
        ["Report made", _time(a.now_ms)],
    ]
    table = Table(rows, colWidths=[35 * mm, _WIDTH - 35 * mm], hAlign="LEFT")
    table.setStyle(TableStyle([*_GRID[2:], ("FONT", (0, 0), (-1, -1), fonts.SANS, 8),
                               ("FONT", (0, 0), (0, -1), fonts.SANS_BOLD, 8),
                               ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#e8e8e8")),
                               ("BACKGROUND", (1, 0), (1, -1), colors.white)]))
    return [table, Spacer(1, 3 * mm), *_section("Params", [_para(_json(job.params), _MONO)], level=3)]


def _outcome_line(a: Audit) -> str:
    if a.outcome is None:
        return f"not finished: {a.job.state.value}, progress {a.job.progress * 100:.0f}%"
    return f"{a.outcome.type.value} at {_time(a.outcome.at)}"


def _outcome(a: Audit) -> list[Flowable]:
    body: list[Flowable] = [_para(_outcome_line(a), _BODY)]
    result: list[Flowable] = []
    if a.outcome is not None and a.outcome.type is EventType.SUCCEEDED:
        # The result once, in full (the timeline's row points here); the artifact beside it.
        artifact = a.outcome.data.get("artifact")
        if artifact:
            body.append(_para(f"Artifact {artifact.get('name')}: {artifact.get('size_bytes', 0):,} bytes, "
                              f"{artifact.get('content_type')}, SHA-256 {artifact.get('sha256')}", _BODY))
        value = a.outcome.data.get("result")
        result = _section("Result", [_para("none" if value is None else _json(value), _MONO)], level=3)
    elif a.outcome is not None:
        body.append(_para(summary(a.outcome), _BODY))
    return [*_section("Outcome", body), *result]


def _attempts(a: Audit) -> list[Flowable]:
    if not a.attempts:
        return _section("Attempts", [_para("The job never started.", _BODY)])
    rows: list[list[Any]] = [["Attempt", "Worker", "Started", "Ended", "Duration", "Outcome"]]
    for span in a.attempts:
        ongoing = span.end_ms is None
        outcome = "running (ongoing)" if ongoing else f"{span.outcome}{': ' + span.detail if span.detail else ''}"
        rows.append([str(span.attempt), _para(span.name), _time(span.start_ms), _time(span.end_ms),
                     duration(span.duration_ms(a.now_ms)) + (" so far" if ongoing else ""), _para(outcome)])
    widths = [15 * mm, 28 * mm, _TIME_W, _TIME_W, 24 * mm]
    return _section("Attempts", [_table(rows, [*widths, _WIDTH - sum(widths)])])


def _phases(a: Audit) -> list[Flowable]:
    if not a.phases:
        return _section("Phases", [_para("The job reported no phases.", _BODY)])
    rows: list[list[Any]] = [["Phase", "Attempt", "Started", "Ended", "Duration"]]
    for span in a.phases:
        ongoing = span.end_ms is None
        rows.append([_para(span.name), str(span.attempt), _time(span.start_ms),
                     "ongoing" if ongoing else _time(span.end_ms), duration(span.duration_ms(a.now_ms))])
    totals: list[list[Any]] = [["Phase", "Total, all attempts"]]
    totals += [[_para(name), duration(ms)] for name, ms in a.phase_totals().items()]
    widths = [15 * mm, _TIME_W, _TIME_W, 22 * mm]
    note = _para("A phase ends with its attempt; the wait before a retry is in no phase.", _NOTE)
    return _section("Phases", [_table(rows, [_WIDTH - sum(widths), *widths], long=True), Spacer(1, 3 * mm),
                               _table(totals, [_WIDTH - sum(widths), 36 * mm]), note])


def _timeline(a: Audit) -> list[Flowable]:
    flow: list[Flowable] = []
    shown = a.event_count - a.omitted
    if a.omitted:
        flow.append(_para(
            f"This timeline shows {shown:,} of {a.event_count:,} events: the first and last ones and every state "
            f"change in between. Durations above count all {a.event_count:,}. The full history is at "
            f"GET /jobs/{a.job.id}/history (Accept: application/x-ndjson streams all of it).", _NOTE))
    rows: list[list[Any]] = [["Time (UTC)", "Elapsed", "Type", "Att.", "Summary"]]
    style = list(_GRID)
    start = a.first_at or 0
    for row in a.timeline:
        if isinstance(row, Omitted):
            counts = ", ".join(f"{t} {n:,}" for t, n in row.by_type.most_common())
            rows.append([_para(f"… {row.count:,} events not shown ({counts}) …", _NOTE), "", "", "", ""])
            style.append(("SPAN", (0, len(rows) - 1), (-1, len(rows) - 1)))
            continue
        rows.append([_time(row.at), duration(row.at - start), row.type.value, str(row.attempt), _para(summary(row))])
    widths = [_TIME_W, 18 * mm, 28 * mm, 9 * mm]
    table = _table(rows, [*widths, _WIDTH - sum(widths)], long=True)
    table.setStyle(TableStyle(style))
    return _section("Timeline", [*flow, table])


def render_audit_pdf(a: Audit) -> bytes:
    """The audit as PDF bytes (CPU only: call it in a thread)."""
    buffer = io.BytesIO()
    title = f"Audit report: job {a.job.id}"

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        fonts.draw_string(canvas, 15 * mm, 8 * mm, f"jobtrail · {title} · made {_time(a.now_ms)} UTC", fonts.SANS, 7)
        fonts.draw_right_string(canvas, A4[0] - 15 * mm, 8 * mm, f"page {doc.page}", fonts.SANS, 7)
        canvas.restoreState()

    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=15 * mm, title=title, author="jobtrail", subject=f"{a.job.kind} job audit")
    story: list[Flowable] = [_para(title, _STYLES["Title"])]
    for section in (_identity, _outcome, _attempts, _phases, _timeline):
        story += section(a)
        story.append(Spacer(1, 4 * mm))
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()

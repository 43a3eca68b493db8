"""export.pdf: params refused at submit, collect/render/write with real progress, a real PDF, deterministic."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import time
from pathlib import Path

import msgspec
import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from jobtrail.artifacts import ArtifactStore
from jobtrail.events import EventType, State
from jobtrail.registry import parse_params
from jobtrail.workers.context import JobContext
from jobtrail.workers.kinds.export_pdf import run_export_pdf
from jobtrail.workers.runner import Runner
from tests.support.export_pdf import QUARTER, artifact_bytes, run, submit


def rectangles(pdf: bytes) -> int:
    """How many rectangles (`re`: table backgrounds, chart bars) the pages draw."""
    reader = PdfReader(io.BytesIO(pdf))
    return sum(
        1 for page in reader.pages for _, op in ContentStream(page.get_contents(), reader).operations if op == b"re"
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"start_date": "2024-03-01", "end_date": "2024-02-01"}, "is before start_date"),
        ({"start_date": "2019-01-01", "end_date": "2024-01-02"}, "longer than 5 years"),
        ({"group_by": "year"}, "$.group_by"),
        ({"colour": "blue"}, "unknown field `colour`"),
        ({"title": "   "}, "title must not be blank"),
        ({"title": "x" * 201}, "$.title"),
        ({"start_date": "2024-13-01"}, "$.start_date"),
        ({"include_charts": False, "include_tables": False}, "no content"),
    ],
)
async def test_bad_params_are_refused_at_submit_with_422(client, change, says):
    response = await client.post("/jobs", json={"kind": "export.pdf", "params": {**QUARTER, **change}})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_params" and says in body["detail"]
    assert (await client.get("/jobs")).json()["jobs"] == [], "nothing was created"


async def test_a_range_of_exactly_five_years_is_accepted_with_defaults_filled_in(client):
    params = {"title": "Five", "start_date": "2020-02-29", "end_date": "2025-02-28"}
    response = await client.post("/jobs", json={"kind": "export.pdf", "params": params})
    assert response.status_code == 202, response.text
    assert response.json()["params"] == {**params, "group_by": "week", "include_charts": True, "include_tables": True}


async def test_report_goes_through_collect_render_write_with_monotonic_progress_to_one(events, settings):
    job = await run(events, settings, "j")
    assert job.state is State.SUCCEEDED and job.progress == 1.0
    history = [e async for e in events.events("j")]
    assert [e.data["phase"] for e in history if e.type is EventType.PHASE] == ["collect", "render", "write"]
    progress = [e.data for e in history if e.type is EventType.PROGRESS]
    fractions = [d["progress"] for d in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    phases = [d.get("phase") for d in progress]
    assert phases == sorted(phases, key=["collect", "render", "write"].index), "phases never go back"
    collect = [d for d in progress if d["phase"] == "collect"]
    assert [d["current"] for d in collect] == list(range(1, 14)), "one report per group"
    pages = [d["current"] for d in progress if d["phase"] == "render" and d.get("message", "").startswith("page")]
    assert max(pages) == job.result["pages"] and len(set(pages)) > 1, "render progress follows the pages"


async def test_artifact_is_a_multi_page_pdf_whose_recorded_metadata_matches_the_download(client, events, settings):
    job = await run(events, settings, "j")
    response = await client.get("/jobs/j/artifact")
    assert response.status_code == 200
    pdf = response.content
    assert pdf == artifact_bytes(settings, job)
    assert job.artifact.name == "q1-sales.pdf" and job.artifact.content_type == "application/pdf"
    assert (job.artifact.size_bytes, job.artifact.sha256) == (len(pdf), hashlib.sha256(pdf).hexdigest())
    history = (await client.get("/jobs/j/history", params={"limit": 1000})).json()["events"]
    assert history[-1]["type"] == "succeeded"
    recorded = msgspec.to_builtins(job.artifact)
    assert recorded.pop("download_url") == "/jobs/j/artifact"
    assert history[-1]["data"]["artifact"] == recorded

    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == job.result["pages"] > 1
    assert reader.metadata.title == "Q1 Sales"
    assert "Q1 Sales" in reader.pages[0].extract_text()
    text = "\n".join(page.extract_text() for page in reader.pages)
    for week in range(1, 14):
        assert f"Week 2024-W{week:02d}" in text
    assert job.result["groups"] == 13


async def test_title_with_markup_characters_is_printed_as_written(events, settings):
    job = await run(events, settings, "j", title="R&D <draft> 100%")
    reader = PdfReader(io.BytesIO(artifact_bytes(settings, job)))
    assert "R&D <draft> 100%" in reader.pages[0].extract_text()
    assert job.artifact.name == "r-d-draft-100.pdf"


async def test_charts_add_drawings_and_pages_but_do_not_change_the_numbers(events, settings):
    on = await run(events, settings, "on", include_charts=True)
    off = await run(events, settings, "off", include_charts=False)
    assert on.result["pages"] > off.result["pages"]
    assert rectangles(artifact_bytes(settings, on)) >= rectangles(artifact_bytes(settings, off)) + 4 * 13, (
        "a bar per region per group"
    )
    assert (on.result["orders"], on.result["revenue_cents"]) == (off.result["orders"], off.result["revenue_cents"])


async def test_same_params_give_a_byte_identical_pdf_and_another_title_other_numbers(events, settings):
    first = await run(events, settings, "first")
    second = await run(events, settings, "second")
    other = await run(events, settings, "other", title="Q1 Sales (EU)")
    assert artifact_bytes(settings, first) == artifact_bytes(settings, second)
    assert first.artifact.sha256 == second.artifact.sha256
    assert first.result == second.result
    assert other.result["seed"] != first.result["seed"] and other.result["orders"] != first.result["orders"]


async def test_grouping_changes_the_sections_not_the_totals(events, settings):
    jobs = {
        group_by: await run(events, settings, group_by, group_by=group_by, include_charts=False)
        for group_by in ("day", "week", "month")
    }
    assert {g: j.result["groups"] for g, j in jobs.items()} == {"day": 91, "week": 13, "month": 3}
    assert len({(j.result["orders"], j.result["revenue_cents"]) for j in jobs.values()}) == 1
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(artifact_bytes(settings, jobs["month"]))).pages)
    assert all(month in text for month in ("January 2024", "February 2024", "March 2024"))


async def test_cancel_during_render_stops_the_render_thread_and_leaves_no_file(events, settings):
    # Five years by day with charts: about 900 pages, several seconds of rendering.
    quick = msgspec.structs.replace(settings, progress_interval_s=0.05)
    await submit(events, "j", {"title": "Big", "start_date": "2019-01-01", "end_date": "2023-12-31",
                               "group_by": "day"})
    task = asyncio.create_task(Runner(events, quick).run("j"))
    deadline = time.monotonic() + 30
    while not ((job := await events.state("j")).phase == "render" and job.progress > 0.32):
        assert time.monotonic() < deadline and not task.done(), f"never reached the page render: {job}"
        await asyncio.sleep(0.02)
    await events.append("j", EventType.CANCEL_REQUESTED, {"reason": "enough"})
    cancelled_at = time.monotonic()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - cancelled_at < 3, "the handler waited for a render it should have stopped"
    job = await events.state("j")
    assert job.state is State.CANCELLED and job.artifact is None and job.progress < 0.9
    folder = Path(settings.artifact_dir) / "j"
    assert not folder.exists() or list(folder.iterdir()) == []


class Killed(BaseException):
    """Stands in for the worker dying mid-write (not an Exception: nothing may swallow it)."""


async def test_a_worker_dying_while_writing_leaves_no_file_and_no_temporary(events, settings):
    folder = Path(settings.artifact_dir) / "j"
    seen_parts: list[str] = []

    class DiesWhileWriting(JobContext):
        async def progress(self, fraction, message=None, phase=None, **counts):
            if phase == "write":
                seen_parts.extend(p.name for p in folder.iterdir())
                raise Killed
            await super().progress(fraction, message, phase, **counts)

    await submit(events, "j", QUARTER)
    await events.append("j", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    ctx = DiesWhileWriting(
        events, "j", 1, min_interval_s=settings.progress_interval_s, artifacts=ArtifactStore(settings.artifact_dir)
    )
    with pytest.raises(Killed):
        await run_export_pdf(parse_params("export.pdf", (await events.state("j")).params), ctx)
    assert len(seen_parts) == 1 and seen_parts[0].endswith(".part"), "the PDF was being written under a temp name"
    assert list(folder.iterdir()) == [] and ctx.produced is None


@pytest.mark.e2e
async def test_worker_process_renders_a_pdf_that_downloads(client, start_worker):
    start_worker()
    response = await client.post("/jobs", json={"kind": "export.pdf", "params": {**QUARTER, "group_by": "month"}})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 30
    while (job := (await client.get(f"/jobs/{job_id}")).json())["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job['state']}"
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job
    pdf = (await client.get(f"/jobs/{job_id}/artifact")).content
    assert hashlib.sha256(pdf).hexdigest() == job["artifact"]["sha256"]
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == job["result"]["pages"] > 1 and "Q1 Sales" in reader.pages[0].extract_text()


def test_the_chart_scale_covers_the_largest_bar_in_at_most_five_round_steps():
    from datetime import date

    from jobtrail.workers.kinds.export_pdf import Group, chart_scale

    for largest in (0, 7, 999, 26_512, 100_001, 3_000_000):
        group = Group("g", date(2024, 1, 1), date(2024, 1, 1), (1, 1), (largest * 100, 100))
        top, step = chart_scale([group])
        assert top >= largest and top % step == 0 and top // step <= 5, (largest, top, step)
        assert str(step).rstrip("0") in ("1", "2", "25", "5"), step


async def test_every_chart_has_the_same_labelled_revenue_axis_so_bars_compare(events, settings):
    job = await run(events, settings, "j", include_tables=False)
    reader = PdfReader(io.BytesIO(artifact_bytes(settings, job)))
    sections = [page.extract_text() for page in reader.pages[1:]]
    text = "\n".join(sections)
    assert text.count("Revenue (USD)") == job.result["groups"] == 13, "a y-axis label with its unit on every chart"
    # One scale: every chart has the same axis labels, $0 up to the same top.
    labels = re.findall(r"^\$\d+k?$", text, re.M)
    assert {label: labels.count(label) for label in labels} == {label: 13 for label in labels}, labels
    assert "$0" in labels and len(set(labels)) >= 3

"""PDFs print text in any script: export.pdf titles, audit.pdf params, messages and errors, and artifact names.

Checked by extracting the text back (pypdf), by the fonts the PDF embeds, and by
rendering a page with pdftoppm (poppler-utils, installed by .ci/run).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pypdf
import pytest

from jobtrail import fonts
from jobtrail.api.common import content_disposition
from jobtrail.events import ErrorInfo, EventType, FailedData, LogData, StartedData, SubmittedData
from tests.support.export_pdf import artifact_bytes, run

TITLE = "Отчёт 売上 — Q1 ✓"
GREEK = "Ελληνικά δεδομένα"
KOREAN = "한국어 보고서"


def embedded_fonts(pdf: bytes) -> set[str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    names = set()
    for page in reader.pages:
        for reference in page["/Resources"]["/Font"].values():
            font = reference.get_object()
            if "/FontDescriptor" in font and "/FontFile2" in font["/FontDescriptor"]:
                names.add(str(font["/BaseFont"]).split("+")[-1])
    return names


def render_first_page(pdf: bytes, folder: Path) -> Path:
    source = folder / "page.pdf"
    source.write_bytes(pdf)
    done = subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(source),
                           str(folder / "page")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    png = folder / "page.png"
    assert png.stat().st_size > 1000
    return png


def test_every_character_of_the_title_is_set_in_a_font_that_has_it():
    pieces = fonts.runs(TITLE + GREEK + KOREAN, fonts.SANS_BOLD)
    assert "".join(piece for _, piece in pieces) == TITLE + GREEK + KOREAN
    for font, piece in pieces:
        for char in piece:
            assert fonts._covers(font, char), (font, char)
    assert {font for font, _ in pieces} == {fonts.SANS_BOLD, fonts.CJK}


async def test_an_export_title_in_cyrillic_cjk_and_symbols_is_printed_and_kept_in_the_file_name(
    client, events, settings, tmp_path
):
    job = await run(events, settings, "j", title=TITLE)
    pdf = artifact_bytes(settings, job)

    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert reader.metadata.title == TITLE
    first = " ".join(reader.pages[0].extract_text().split())
    assert TITLE in first, first
    assert {"DejaVuSans", "DejaVuSans-Bold", "DroidSansFallback"} <= embedded_fonts(pdf)
    render_first_page(pdf, tmp_path)

    assert job.artifact.name == "отчёт-売上-q1.pdf"
    response = await client.get("/jobs/j/artifact")
    assert response.status_code == 200 and response.content == pdf
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="q1.pdf"; ')
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == "отчёт-売上-q1.pdf"


async def test_the_same_title_gives_the_same_bytes_with_embedded_fonts(events, settings):
    first = artifact_bytes(settings, await run(events, settings, "a", title=TITLE))
    second = artifact_bytes(settings, await run(events, settings, "b", title=TITLE))
    assert first == second


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("q1-sales.pdf", 'attachment; filename="q1-sales.pdf"'),
        ("café.pdf", "attachment; filename=\"cafe.pdf\"; filename*=UTF-8''caf%C3%A9.pdf"),
        ("売上.pdf", "attachment; filename=\"job-1.pdf\"; filename*=UTF-8''%E5%A3%B2%E4%B8%8A.pdf"),
        ('a"b;c.pdf', "attachment; filename=\"a-b-c.pdf\"; filename*=UTF-8''a%22b%3Bc.pdf"),
    ],
)
def test_content_disposition_has_an_ascii_name_and_the_utf8_one_when_they_differ(name, header):
    assert content_disposition(name, fallback="job-1") == header


async def test_audit_pdf_prints_params_messages_and_errors_in_any_script(client, events, tmp_path):
    data = SubmittedData(kind="report", params={"title": TITLE, "region": GREEK}, max_attempts=1)
    await events.append("u", EventType.SUBMITTED, data)
    await events.append("u", EventType.STARTED, StartedData(worker="w1", attempt=1), attempt=1)
    await events.append("u", EventType.LOG, LogData(level="info", message=KOREAN), attempt=1)
    error = ErrorInfo(type="ValueError", message="列 'номер' ✗ missing")
    await events.append("u", EventType.FAILED, FailedData(error=error), attempt=1)

    response = await client.get("/jobs/u/audit.pdf")
    assert response.status_code == 200
    pdf = response.content
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    for fragment in (TITLE, GREEK, KOREAN, "ValueError: 列 'номер' ✗ missing"):
        assert fragment in text, fragment
    assert {"DejaVuSans", "DejaVuSansMono", "DroidSansFallback"} <= embedded_fonts(pdf)
    render_first_page(pdf, tmp_path)

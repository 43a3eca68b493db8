"""Auditing a job: its whole history as NDJSON, and GET /jobs/{id}/audit.pdf.

The PDF is checked by parsing it (pypdf) and reading its text, not by its magic bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc

import msgspec
import pypdf
import redis.asyncio as aioredis

from jobtrail.audit import AuditBuilder
from jobtrail.eventlog import EventLog
from jobtrail.events import (
    ErrorInfo,
    EventType,
    FailedData,
    LogData,
    PhaseData,
    ProgressData,
    ReasonData,
    RetryingData,
    StartedData,
    SubmittedData,
    SucceededData,
)
from jobtrail.keys import Keys
from jobtrail.offsets import id_key
from tests.support.pdf import pdf_text

NDJSON = "application/x-ndjson"
T0 = 1_700_000_000_000  # the `at` of every test job's submission, epoch ms


# --- making jobs ---


async def started_job(events: EventLog, job_id: str, *, kind: str = "report", max_attempts: int = 3) -> None:
    data = SubmittedData(kind=kind, params={"region": "eu-west", "rows": 1200}, max_attempts=max_attempts)
    await events.append(job_id, EventType.SUBMITTED, data, at_ms=T0)
    await events.append(job_id, EventType.STARTED, StartedData(worker="w1", attempt=1), attempt=1, at_ms=T0 + 250)


async def bulk_progress(
    redis: aioredis.Redis, keys: Keys, job_id: str, count: int, *, start_ms: int, attempt: int, phase: str | None = None
) -> None:
    """`count` progress events, one ms apart, XADDed straight to the job's stream in pipelined batches."""
    for first in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(first, min(first + 5000, count)):
                data = {"progress": n / count, "current": n, "total": count}
                if phase:
                    data["phase"] = phase
                fields = {"type": "progress", "at": start_ms + n, "v": 1, "attempt": attempt,
                          "data": msgspec.json.encode(data)}
                pipe.xadd(keys.events(job_id), fields)
            await pipe.execute()


def canonical(event: dict) -> bytes:
    return json.dumps(event, sort_keys=True).encode() + b"\n"


async def json_history(client, job_id: str) -> list[dict]:
    found, after = [], None
    while True:
        params = {"limit": 1000, **({"after": after} if after else {})}
        page = (await client.get(f"/jobs/{job_id}/history", params=params)).json()
        found += page["events"]
        if not page["next"]:
            return found
        after = page["next"]


def flat(text: str) -> str:
    return " ".join(text.split())


# --- NDJSON history ---


async def test_history_as_ndjson_streams_every_event_in_order_as_the_json_pages_show_them(client, events, redis_client,
                                                                                         keys):
    await started_job(events, "nd")
    await bulk_progress(redis_client, keys, "nd", 1234, start_ms=T0 + 1000, attempt=1)
    await events.append("nd", EventType.SUCCEEDED, SucceededData(result={"rows": 1234}))

    response = await client.get("/jobs/nd/history", headers={"Accept": NDJSON})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(NDJSON)
    lines = response.content.split(b"\n")
    assert lines[-1] == b"", "every line, the last included, ends with a newline"
    streamed = [json.loads(line) for line in lines[:-1]]
    assert len(streamed) == 1237
    assert streamed == await json_history(client, "nd")
    assert [e["id"] for e in streamed] == [entry_id for entry_id, _ in await redis_client.xrange(keys.events("nd"))]

    after = streamed[1000]["id"]
    resumed = await client.get("/jobs/nd/history", params={"after": after}, headers={"Accept": NDJSON})
    assert [json.loads(line) for line in resumed.content.splitlines()] == streamed[1001:]


async def test_history_without_an_ndjson_accept_header_is_still_one_json_page(client, events):
    await started_job(events, "j")
    for accept in (None, "application/json", "*/*", "text/html, application/json;q=0.9"):
        response = await client.get("/jobs/j/history", headers={"Accept": accept} if accept else {})
        assert response.headers["content-type"].startswith("application/json"), accept
        assert [e["type"] for e in response.json()["events"]] == ["submitted", "started"]
        assert response.json()["next"] is None


async def test_ndjson_history_of_an_unknown_job_is_a_404_json_error(client):
    response = await client.get("/jobs/nope/history", headers={"Accept": NDJSON})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "job_not_found"


async def test_ndjson_history_of_a_100k_event_job_is_streamed_in_bounded_memory(client, events, redis_client, keys):
    count = 100_000
    await started_job(events, "big")
    await bulk_progress(redis_client, keys, "big", count, start_ms=T0 + 1000, attempt=1)
    await events.append("big", EventType.SUCCEEDED, SucceededData(result=count))

    streamed_hash, size, lines, last_id = hashlib.sha256(), 0, 0, (0, 0)
    tracemalloc.start()
    try:
        async with client.stream("GET", "/jobs/big/history", headers={"Accept": NDJSON}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                assert id_key(event["id"]) > last_id, "oldest first, no repeats"
                last_id = id_key(event["id"])
                streamed_hash.update(canonical(event))
                size += len(line) + 1
                lines += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert lines == count + 3
    assert size > 10_000_000, "the whole history is large"
    # Measured: about 1.6 MB (a page of events in flight, client and server in this process).
    assert peak < min(size / 5, 4_000_000), f"peak {peak:,} bytes traced while streaming {size:,} bytes"
    expected_hash = hashlib.sha256()
    for event in await json_history(client, "big"):
        expected_hash.update(canonical(event))
    assert streamed_hash.hexdigest() == expected_hash.hexdigest(), "the same events as the JSON pages"


async def test_openapi_documents_both_media_types_of_the_history(client):
    schema = (await client.get("/schema/openapi.json")).json()
    ok = schema["paths"]["/jobs/{job_id}/history"]["get"]["responses"]["200"]["content"]
    assert set(ok) == {"application/json", NDJSON}
    assert ok[NDJSON]["schema"] == {"$ref": "#/components/schemas/EventOut"}
    assert "EventOut" in schema["components"]["schemas"]
    assert "application/pdf" in schema["paths"]["/jobs/{job_id}/audit.pdf"]["get"]["responses"]["200"]["content"]


# --- audit.pdf ---


async def test_audit_pdf_shows_identity_attempts_phase_durations_timeline_and_outcome(client, events):
    await started_job(events, "audited", kind="report")
    ev = events.append
    await ev("audited", EventType.PHASE, PhaseData(phase="download"), at_ms=T0 + 1_250)
    await ev("audited", EventType.PROGRESS, ProgressData(progress=0.4, current=4, total=10, phase="download"),
             at_ms=T0 + 2_000)
    error = ErrorInfo(type="TimeoutError", message="upstream took too long")
    await ev("audited", EventType.RETRYING, RetryingData(error=error, delay_s=2.0, next_attempt=2), at_ms=T0 + 2_750)
    await ev("audited", EventType.STARTED, StartedData(worker="w2", attempt=2), attempt=2, at_ms=T0 + 4_500)
    await ev("audited", EventType.PROGRESS, ProgressData(progress=0.1, phase="download"), at_ms=T0 + 4_600)
    await ev("audited", EventType.PROGRESS, ProgressData(progress=0.6, phase="transform"), at_ms=T0 + 7_600)
    await ev("audited", EventType.LOG, LogData(level="warning", message="skipped 3 malformed rows"), at_ms=T0 + 8_000)
    await ev("audited", EventType.SUCCEEDED, SucceededData(result={"rows": 1197}), at_ms=T0 + 70_600)

    response = await client.get("/jobs/audited/audit.pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    pages, raw = pdf_text(response.content)
    text = flat(raw)
    assert pages >= 1
    for fragment in ("Audit report: job audited", "report", "eu-west", "Outcome",
                     "succeeded at 2023-11-14 22:14:30.600",
                     '"rows": 1197', "Attempts", "w1", "w2", "TimeoutError: upstream took too long",
                     "skipped 3 malformed rows", "40% · 4/10 · phase download"):
        assert fragment in text, fragment
    for event_type in ("submitted", "started", "phase", "progress", "retrying", "log", "succeeded"):
        assert f" {event_type} " in text, event_type
    # Attempts: 1 ran 250 ms -> 2750 ms, 2 ran 4500 ms -> 70600 ms; queued 250 ms, total 70.6 s.
    assert "2 of at most 3" in text
    assert "2.5 s retrying: TimeoutError" in text and "1 min 06 s succeeded" in text
    # Phases: download 1.5 s in attempt 1 and 3.0 s in attempt 2; transform 63.0 s.
    assert "download 1 2023-11-14 22:13:21.250 2023-11-14 22:13:22.750 1.5 s" in text
    assert "download 2 2023-11-14 22:13:24.600 2023-11-14 22:13:27.600 3.0 s" in text
    assert "transform 2 2023-11-14 22:13:27.600 2023-11-14 22:14:30.600 1 min 03 s" in text
    assert "download 4.5 s" in text and "transform 1 min 03 s" in text, "totals per phase over all attempts"
    assert "Queued 250 ms" in text and "Total 1 min 10 s" in text
    assert "events not shown" not in text


async def test_audit_pdf_of_a_failed_job_names_the_error(client, events):
    await started_job(events, "broken", max_attempts=1)
    await events.append("broken", EventType.FAILED, FailedData(error=ErrorInfo(type="KeyError", message="'id'")),
                        at_ms=T0 + 900)
    _, raw = pdf_text((await client.get("/jobs/broken/audit.pdf")).content)
    text = flat(raw)
    assert "failed at 2023-11-14 22:13:20.900" in text
    assert "KeyError: 'id'" in text
    assert "650 ms failed" in text


async def test_audit_pdf_of_a_long_job_notes_what_it_left_out_but_times_every_phase(client, events, redis_client,
                                                                                    keys):
    await started_job(events, "long")
    await bulk_progress(redis_client, keys, "long", 6_000, start_ms=T0 + 1_000, attempt=1, phase="scan")
    # `merge` happens only in the middle of the timeline, which the report leaves out.
    await bulk_progress(redis_client, keys, "long", 6_000, start_ms=T0 + 7_000, attempt=1, phase="merge")
    await bulk_progress(redis_client, keys, "long", 2_000, start_ms=T0 + 13_000, attempt=1, phase="write")
    await events.append("long", EventType.SUCCEEDED, SucceededData(result="done"), at_ms=T0 + 15_000)

    response = await client.get("/jobs/long/audit.pdf")
    assert response.status_code == 200
    pages, raw = pdf_text(response.content)
    text = flat(raw)
    assert "This timeline shows 1,000 of 14,003 events" in text
    assert "13,003 events not shown (progress 13,003)" in text
    assert "merge 1 2023-11-14 22:13:27.000 2023-11-14 22:13:33.000 6.0 s" in text
    assert "scan 6.0 s" in text and "write 2.0 s" in text
    assert "succeeded at 2023-11-14 22:13:35.000" in text
    assert 5 <= pages < 60


async def test_audit_pdf_of_an_unknown_job_is_a_404_json_error(client):
    for job_id in ("nope", "bad%20id"):
        response = await client.get(f"/jobs/{job_id}/audit.pdf")
        assert response.status_code == 404
        assert response.json()["error"] == "job_not_found"


# --- an audit an auditor can hand on ---


async def retried_job(events: EventLog, job_id: str, *, notes_words: int = 0) -> None:
    """Attempt 1 runs 250 -> 2750 ms and fails; it waits 1.75 s; attempt 2 runs 4500 -> 70600 ms."""
    params = {"region": "eu-west", "notes": " ".join(f"w{i}" for i in range(notes_words))}
    await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="report", params=params, max_attempts=3),
                        at_ms=T0)
    ev = events.append
    await ev(job_id, EventType.STARTED, StartedData(worker="w1", attempt=1), attempt=1, at_ms=T0 + 250)
    await ev(job_id, EventType.PROGRESS, ProgressData(progress=0.4, phase="download"), attempt=1, at_ms=T0 + 1_250)
    error = ErrorInfo(type="TimeoutError", message="upstream took too long")
    await ev(job_id, EventType.RETRYING, RetryingData(error=error, delay_s=1.75, next_attempt=2), attempt=1,
             at_ms=T0 + 2_750)
    await ev(job_id, EventType.STARTED, StartedData(worker="w2", attempt=2), attempt=2, at_ms=T0 + 4_500)
    await ev(job_id, EventType.PROGRESS, ProgressData(progress=0.6, phase="transform"), attempt=2, at_ms=T0 + 7_600)
    await ev(job_id, EventType.SUCCEEDED, SucceededData(result={"rows": 1197, "files": ["a.csv", "b.csv"]}),
             attempt=2, at_ms=T0 + 70_600)


async def test_running_time_counts_the_attempts_and_not_the_wait_before_a_retry(client, events):
    await retried_job(events, "r")
    builder = AuditBuilder(await events.state("r"))
    async for event in events.events("r"):
        builder.add(event)
    audit = builder.finish(T0 + 80_000)

    assert audit.running_ms() == 2_500 + 66_100
    assert audit.waiting_ms() == 1_750 and [w.attempt for w in audit.waits] == [2]
    queued = audit.first_started_at - audit.first_at
    assert queued + audit.running_ms() + audit.waiting_ms() == audit.finished_at - audit.first_at, "the parts add up"
    assert audit.phase_totals() == {"download": 1_500, "transform": 63_000}, "no phase holds the wait"

    text = flat(pdf_text((await client.get("/jobs/r/audit.pdf")).content)[1])
    assert "Queued 250 ms" in text
    assert "Running 1 min 08 s (all attempts, without retry waits)" in text
    assert "Waiting to retry 1.8 s (1 wait)" in text and "Total 1 min 10 s" in text


async def test_a_wait_for_a_retry_that_never_came_ends_at_the_cancellation(events):
    await started_job(events, "c")
    error = ErrorInfo(type="TimeoutError", message="slow")
    await events.append("c", EventType.RETRYING, RetryingData(error=error, delay_s=30, next_attempt=2), attempt=1,
                        at_ms=T0 + 1_000)
    await events.append("c", EventType.CANCELLED, ReasonData(reason="enough"), attempt=1, at_ms=T0 + 6_000)
    builder = AuditBuilder(await events.state("c"))
    async for event in events.events("c"):
        builder.add(event)
    audit = builder.finish(T0 + 99_000)
    assert (audit.running_ms(), audit.waiting_ms()) == (750, 5_000)


async def test_the_result_is_printed_once(client, events):
    await retried_job(events, "once")
    text = flat(pdf_text((await client.get("/jobs/once/audit.pdf")).content)[1])
    assert text.count("1197") == 1, text
    assert text.count("eu-west") == 1, "params too are printed once"
    assert "result under Outcome" in text


async def test_no_section_heading_is_left_alone_at_the_foot_of_a_page(client, events):
    headings = {"Params", "Outcome", "Result", "Attempts", "Phases", "Timeline"}
    # Params of growing length push every heading past the foot of page 1 in turn.
    for words in range(600, 1400, 40):
        await retried_job(events, f"h{words}", notes_words=words)
        reader = pypdf.PdfReader(io.BytesIO((await client.get(f"/jobs/h{words}/audit.pdf")).content))
        for number, page in enumerate(reader.pages, 1):
            lines = [line.strip() for line in page.extract_text().splitlines()
                     if line.strip() and not line.startswith(("jobtrail ·", "page "))]
            assert lines[-1] not in headings, f"{words} words: page {number} ends with the heading {lines[-1]!r}"

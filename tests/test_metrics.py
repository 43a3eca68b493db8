"""Prometheus metrics, scraped from a real API and a real worker after real jobs ran, parsed as Prometheus would."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from jobtrail.api.app import create_app
from jobtrail.auth import ConfigError, hash_key
from jobtrail.events import EventType, SubmittedData
from jobtrail.livejobs import LiveJobs, now_ms
from jobtrail.metrics import LiveJobsCollector
from jobtrail.registry import validate_params
from jobtrail.workers.queue import group_name
from jobtrail.workers.reaper import Reaper
from jobtrail.workers.runner import Runner
from tests.support.api import FINISH_S, submit, wait_for_state
from tests.support.env import ROOT, worker_env
from tests.support.jobs import progress, running_job
from tests.support.redis_server import free_port
from tests.support.serve import serve, wait_ready
from tests.support.ws import open_socket

TENANT_KEY, ADMIN_KEY = "jt_tenant-key-for-metrics", "jt_admin-key-for-metrics"
TERMINAL = {"succeeded", "failed", "cancelled"}

# Name (as the parser names a family: counters without `_total`) -> type, labels of its samples.
EXPECTED = {
    "jobtrail_jobs_submitted": ("counter", {"kind"}),
    "jobtrail_job_events": ("counter", {"kind", "type"}),
    "jobtrail_job_duration_seconds": ("histogram", {"kind", "outcome"}),
    "jobtrail_job_queue_wait_seconds": ("histogram", {"kind"}),
    "jobtrail_job_retries": ("counter", {"kind", "error_type"}),
    "jobtrail_jobs_stalled": ("counter", {"reason"}),
    "jobtrail_event_append_duration_seconds": ("histogram", set()),
    "jobtrail_sse_streams": ("gauge", {"stream"}),
    "jobtrail_ws_connections": ("gauge", set()),
    "jobtrail_hub_subscriptions": ("gauge", set()),
    "jobtrail_event_delivery_lag_seconds": ("histogram", set()),
    "jobtrail_jobs": ("gauge", {"state"}),
}
PER_JOB = {"jobtrail_jobs_submitted", "jobtrail_job_events", "jobtrail_job_duration_seconds",
           "jobtrail_job_queue_wait_seconds", "jobtrail_job_retries", "jobtrail_jobs"}


class Scrape:
    """One scrape, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, name: str) -> list[Sample]:
        return [s for family in self.families.values() for s in family.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels (le aside); 0 when it is absent, as PromQL reads a counter."""
        found = [s.value for s in self.samples(name) if s.labels == labels]
        assert len(found) <= 1, f"{name}{labels}: {found}"
        return found[0] if found else 0.0


async def scrape(http: httpx.AsyncClient, url: str = "/metrics", **headers: str) -> Scrape:
    response = await http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def run_in_process(api, settings, job_id: str) -> None:
    """Run the job here on the API's own services, as the embedded mode runs it: the API's /metrics shows it."""
    await asyncio.wait_for(Runner(api.services.events, settings, name="in-process").run(job_id), FINISH_S)


def label_values(scraped: Scrape) -> set[str]:
    return {value for family in scraped.families.values() for s in family.samples for value in s.labels.values()}


async def test_after_a_job_ran_every_metric_is_there_with_its_type_labels_and_values(api, client, settings):
    job_id = await submit(client, {"steps": 3, "delay_ms": 1})
    await run_in_process(api, settings, job_id)

    scraped = await scrape(client)

    for name, (kind, labels) in EXPECTED.items():
        family = scraped.families.get(name)
        assert family is not None, f"{name} missing from:\n{scraped.text}"
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, f"{sample}"
    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo") == 1
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="submitted") == 1
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="started") == 1
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="progress") == 3
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="succeeded") == 1
    assert scraped.value("jobtrail_job_duration_seconds_count", kind="demo", outcome="succeeded") == 1
    assert 0 < scraped.value("jobtrail_job_duration_seconds_sum", kind="demo", outcome="succeeded") < FINISH_S
    assert scraped.value("jobtrail_job_queue_wait_seconds_count", kind="demo") == 1
    assert scraped.value("jobtrail_event_append_duration_seconds_count") >= 6
    assert scraped.value("jobtrail_jobs", state="pending") == 0
    assert scraped.value("jobtrail_jobs", state="running") == 0
    assert scraped.value("jobtrail_sse_streams", stream="job") == 0
    assert job_id not in scraped.text, "a job id is never a label, nor anywhere else"


async def test_an_idempotent_repeat_submits_nothing_and_pending_jobs_are_counted_from_the_live_set(client):
    for _ in range(3):
        response = await client.post(
            "/jobs", json={"kind": "demo", "params": {"steps": 1}}, headers={"Idempotency-Key": "once"}
        )
        assert response.status_code in (200, 202), response.text
    await submit(client, {"steps": 1})

    scraped = await scrape(client)

    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo") == 2
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="submitted") == 2
    assert scraped.value("jobtrail_jobs", state="pending") == 2
    assert scraped.value("jobtrail_jobs", state="running") == 0


async def test_a_failing_attempt_counts_a_retry_by_error_type_and_each_attempt_a_duration(api, client, settings):
    job_id = await submit(client, {"steps": 3, "delay_ms": 1, "fail_at_step": 2}, max_attempts=2)
    await run_in_process(api, settings, job_id)

    scraped = await scrape(client)

    assert scraped.value("jobtrail_job_retries_total", kind="demo", error_type="DemoFailure") == 1
    assert scraped.value("jobtrail_job_duration_seconds_count", kind="demo", outcome="retried") == 1
    assert scraped.value("jobtrail_job_duration_seconds_count", kind="demo", outcome="failed") == 1
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="retrying") == 1
    # Only the first start waited in the queue since the job was submitted; the retry's backoff is no queue wait.
    assert scraped.value("jobtrail_job_queue_wait_seconds_count", kind="demo") == 1


async def test_a_running_job_is_counted_as_running_and_a_live_sse_stream_as_open(api, client, settings):
    job_id = await submit(client, {"steps": 40, "delay_ms": 50})
    run = asyncio.create_task(run_in_process(api, settings, job_id))
    await wait_for_state(client, job_id, {"running"})
    async with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        lines = stream.aiter_lines()
        while "progress" not in await anext(lines):  # the stream is open and tailing
            pass
        scraped = await scrape(client)
        assert scraped.value("jobtrail_jobs", state="running") == 1
        assert scraped.value("jobtrail_sse_streams", stream="job") == 1
        assert scraped.value("jobtrail_hub_subscriptions") == 1
        async for _ in lines:  # to the end of the stream, after the terminal event
            pass
    await run

    deadline = time.monotonic() + FINISH_S
    while (scraped := await scrape(client)).value("jobtrail_sse_streams", stream="job") != 0:
        assert time.monotonic() < deadline, "the SSE stream is still counted as open after it ended"
        await asyncio.sleep(0.05)
    lag = scraped.value("jobtrail_event_delivery_lag_seconds_count")
    assert lag >= 2, "live events written to the client were observed"
    assert scraped.value("jobtrail_event_delivery_lag_seconds_sum") / lag < 5
    assert scraped.value("jobtrail_jobs", state="running") == 0


async def test_a_websocket_counts_while_open_and_only_its_live_events_count_as_delivered(api, client, events):
    await running_job(events, "watched")
    async with open_socket(api.url) as socket:
        await socket.send(op="subscribe", job="watched", after=None)
        replayed = await socket.until(lambda frame: frame.get("type") == "started")
        opened = await scrape(client)
        await progress(events, "watched", 1, 2)
        await events.append("watched", EventType.SUCCEEDED, {"result": 1})
        await socket.until_end("watched")
        live = await scrape(client)

    assert [f["type"] for f in replayed] == ["subscribed", "submitted", "started"]
    assert opened.value("jobtrail_ws_connections") == 1
    assert opened.value("jobtrail_event_delivery_lag_seconds_count") == 0, "a replayed event's age is not lag"
    assert live.value("jobtrail_event_delivery_lag_seconds_count") == 2
    deadline = time.monotonic() + FINISH_S
    while (await scrape(client)).value("jobtrail_ws_connections") != 0:
        assert time.monotonic() < deadline, "the socket is still counted after it closed"
        await asyncio.sleep(0.05)


async def test_a_worker_serves_its_own_metrics_on_its_metrics_port(client, settings, tmp_path):
    port = free_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "jobtrail.cli", "worker", "--metrics-port", str(port)],
            cwd=ROOT, env=worker_env(settings), stdout=out, stderr=out,
        )
    try:
        job_id = await submit(client, {"steps": 2, "delay_ms": 1})
        job = await wait_for_state(client, job_id, TERMINAL)
        assert job["state"] == "succeeded", log.read_text()
        async with httpx.AsyncClient(timeout=10) as http:
            scraped = await scrape(http, f"http://127.0.0.1:{port}/metrics")
    finally:
        worker.terminate()
        worker.wait(20)

    assert scraped.value("jobtrail_job_events_total", kind="demo", type="started") == 1
    assert scraped.value("jobtrail_job_events_total", kind="demo", type="succeeded") == 1
    assert scraped.value("jobtrail_job_duration_seconds_count", kind="demo", outcome="succeeded") == 1
    assert scraped.value("jobtrail_job_queue_wait_seconds_count", kind="demo") == 1
    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo") == 0, "the API submitted it, not the worker"
    assert "jobtrail_jobs" not in scraped.families, "the API processes count the live set, not every worker"
    assert job_id not in scraped.text


def test_a_worker_whose_metrics_port_is_taken_stops_at_start_and_says_so(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = subprocess.run(
            [sys.executable, "-m", "jobtrail.cli", "worker", "--metrics-port", str(port)],
            cwd=ROOT, env=worker_env(settings), capture_output=True, text=True, timeout=60,
        )
    assert worker.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in worker.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "worker", "--metrics-port", "70000"],
        cwd=ROOT, env=worker_env(settings), capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert "a port is 1 to 65535" in bad.stderr


async def test_the_reaper_counts_the_stalls_it_finds_by_reason(services, settings, redis_client, keys):
    events = services.events
    live = LiveJobs(redis_client, keys, settings.pending_stale_s)
    params = validate_params("demo", {"steps": 1})
    for job_id in ("running", "lost"):
        await events.append(job_id, EventType.SUBMITTED, SubmittedData(kind="demo", params=params, max_attempts=3))
        await live.track(job_id)
    # Started by a worker that died: no lease.
    await events.append("running", EventType.STARTED, {"worker": "dead", "attempt": 1}, attempt=1, key="started:1")
    group = group_name(keys)
    await redis_client.xgroup_create(keys.queue(), group, id="0", mkstream=True)

    async def requeue(job_id: str) -> None:
        pass

    reaper = Reaper(events, requeue, settings, group=group, name="reaper")
    assert sorted(await reaper.reap(now_ms() + 3_600_000)) == ["lost", "running"]

    scraped = Scrape((await services.metrics.render()).decode())
    assert scraped.value("jobtrail_jobs_stalled_total", reason="worker_gone") == 1
    assert scraped.value("jobtrail_jobs_stalled_total", reason="pending_stale") == 1


async def test_embedded_the_apis_metrics_carry_the_jobs_it_ran_itself(settings, tmp_path):
    process, url = serve(settings, tmp_path, REDIS_URL="")
    try:
        await wait_ready(process, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            job = await wait_for_state(http, await submit(http, {"steps": 2, "delay_ms": 1}), TERMINAL)
            assert job["state"] == "succeeded"
            scraped = await scrape(http)
    finally:
        process.terminate()
        process.wait(20)

    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo") == 1
    assert scraped.value("jobtrail_job_duration_seconds_count", kind="demo", outcome="succeeded") == 1
    assert scraped.value("jobtrail_job_queue_wait_seconds_count", kind="demo") == 1
    assert "jobtrail_jobs" in scraped.families, "counted on the embedded store too"
    assert scraped.value("jobtrail_jobs", state="pending") == 0


# --- access ---


def secured(settings, **extra):
    return msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(TENANT_KEY)}, *:{hash_key(ADMIN_KEY)}", **extra
    )


async def test_with_keys_metrics_need_an_admin_key(start_api, settings):
    api = await start_api(secured(settings))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        nobody = await http.get("/metrics")
        tenant = await http.get("/metrics", headers={"Authorization": f"Bearer {TENANT_KEY}"})
        token = (await http.post("/events/tokens", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()["token"]
        by_token = await http.get("/metrics", params={"token": token})
        await scrape(http, Authorization=f"Bearer {ADMIN_KEY}")

    assert nobody.status_code == 401
    assert tenant.status_code == 403
    assert tenant.json()["error"] == "forbidden"
    assert "admin key" in tenant.json()["detail"]
    assert by_token.status_code == 401


async def test_a_separate_bind_serves_metrics_without_a_key_and_the_main_port_still_asks_for_one(start_api, settings):
    port = free_port()
    api = await start_api(secured(settings, metrics_bind=f"127.0.0.1:{port}"))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        response = await http.post(
            "/jobs", json={"kind": "demo", "params": {"steps": 1}}, headers={"Authorization": f"Bearer {TENANT_KEY}"}
        )
        assert response.status_code == 202
        main = await http.get("/metrics")
        # From another thread than the event loop's: the live set is still counted.
        opened = await asyncio.to_thread(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30))

    assert main.status_code == 401
    assert opened.status_code == 200
    scraped = Scrape(opened.text)
    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo") == 1
    assert scraped.value("jobtrail_jobs", state="pending") == 1
    assert "tenant" not in {label for family in scraped.families.values() for s in family.samples for label in s.labels}


async def test_the_tenant_label_is_there_only_when_switched_on(start_api, settings):
    api = await start_api(secured(settings, metrics_tenant_label="on"))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        for key in (TENANT_KEY, ADMIN_KEY):
            response = await http.post(
                "/jobs", json={"kind": "demo", "params": {"steps": 1}}, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 202
        scraped = await scrape(http, Authorization=f"Bearer {ADMIN_KEY}")

    for name in PER_JOB:
        for sample in scraped.families[name].samples:
            assert "tenant" in sample.labels, sample
    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo", tenant="acme") == 1
    assert scraped.value("jobtrail_jobs_submitted_total", kind="demo", tenant="-") == 1
    assert scraped.value("jobtrail_jobs", state="pending", tenant="acme") == 1
    assert "tenant" not in scraped.families["jobtrail_sse_streams"].samples[0].labels


def test_a_malformed_metrics_bind_stops_the_api_from_starting(settings):
    with pytest.raises(ConfigError, match="JOBTRAIL_METRICS_BIND must be host:port"):
        create_app(msgspec.structs.replace(settings, metrics_bind="9100"))


async def test_with_redis_down_or_frozen_metrics_are_served_without_the_live_count(
    start_api, settings, durable_redis
):
    on_its_own = msgspec.structs.replace(settings, redis_url=durable_redis.url, redis_timeout_s=1.0)
    api = await start_api(on_its_own)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        await submit(http, {"steps": 1})
        assert (await scrape(http)).value("jobtrail_jobs", state="pending") == 1
        await asyncio.sleep(LiveJobsCollector.FRESH_S)  # past the count that overlapping scrapes share
        assert durable_redis.process is not None
        durable_redis.process.send_signal(signal.SIGSTOP)  # frozen: every command hangs
        try:
            frozen = await scrape(http)
        finally:
            durable_redis.process.send_signal(signal.SIGCONT)
        durable_redis.kill()
        await asyncio.sleep(LiveJobsCollector.FRESH_S)
        down = await scrape(http)

    for scraped in (frozen, down):
        assert "jobtrail_jobs" not in scraped.families, "no samples rather than stale ones"
        assert scraped.value("jobtrail_jobs_submitted_total", kind="demo") == 1


# --- Swagger UI, offline ---


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_swagger_ui_loads_nothing_from_another_host_and_its_files_are_served(client):
    page = await client.get("/schema/swagger")
    assert page.status_code == 200
    parser = _Urls()
    parser.feed(page.text)

    assert len(parser.urls) == 4, parser.urls  # script, preset, styles, favicon
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", page.text.split("spec:")[0])
    for url in parser.urls:
        assert url.startswith("/schema/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 500, url
    assert (await client.get("/schema/assets/index.html")).status_code == 404
    assert (await client.get("/schema/assets/..%2Fmetrics.py")).status_code == 404


def test_the_grafana_dashboard_queries_only_metrics_jobtrail_exports():
    dashboard = json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert len(exprs) >= 15
    names = {name for expr in exprs for name in re.findall(r"jobtrail_\w+", expr)}
    used = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in names}
    assert used == set(EXPECTED), f"queried, not exported: {used - set(EXPECTED)}; not shown: {set(EXPECTED) - used}"

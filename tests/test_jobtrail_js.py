"""jobtrail.js in a real browser against real servers: every event once, in order, through anything.

Each test runs a real worker on demo jobs, watches them from a page the way the dashboard
does (the module imported from /ui/jobtrail.js, tokens from the API's token routes), breaks
something mid-job (the API process, Redis, the token, the WebSocket), and then holds what
the page delivered equal to the job's history as `GET /jobs/{id}/history` tells it: no
event lost, none repeated, the terminal one last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from jobtrail.auth import hash_key, new_key
from tests.support.api import history, submit
from tests.support.jobs import finished_job, progress, running_job, stream_ids
from tests.support.jobtrail_js import start_watch, wait_for, wait_for_ends, wait_for_events
from tests.support.serve import serve, wait_ready
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker_procs import Workers

pytestmark = pytest.mark.e2e

KEY = new_key()
TRANSPORTS = ["ws", "sse"]
LONG_JOB = {"steps": 40, "delay_ms": 100}  # about 4 s: long enough to break something in the middle


@pytest.fixture
def secured(settings):
    return msgspec.structs.replace(settings, auth="auto", api_keys=f"acme:{hash_key(KEY)}")


@pytest.fixture
async def workers(secured, tmp_path) -> AsyncIterator[Workers]:
    started = Workers(secured, tmp_path)
    yield started
    started.close()


@pytest.fixture
async def proxied(start_api, secured, workers) -> AsyncIterator[tuple[str, TcpProxy, str]]:
    """The API (keys on) with a worker, and a proxy before it that the test can cut: (API url, proxy, page url).

    The page is loaded through the proxy, so everything it opens goes through it too.
    """
    api = await start_api(secured)
    await workers.start()
    proxy = TcpProxy("127.0.0.1", int(api.url.rsplit(":", 1)[1]))
    page_url = await proxy.start()
    yield api.url, proxy, page_url
    await proxy.stop()


def http_for(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


async def history_ids(http: httpx.AsyncClient, job: str) -> list[str]:
    return [event["id"] for event in await history(http, job)]


async def open_page(browser, url: str):
    page = await browser.new_page()
    response = await page.goto(f"{url}/ui/")
    assert response is not None and response.status == 200
    return page


def assert_whole(found, job: str, expected: list[str]) -> None:
    """The page delivered exactly the job's history, then ended it as terminal, state succeeded at 100 %."""
    delivered = found.ids(job)
    assert len(delivered) == len(set(delivered)), f"repeated events: {delivered}"
    assert delivered == expected
    assert [event["type"] for event in found.events if event["job"] == job][-1] == "succeeded"
    assert ["terminal", job] in found.ends
    final = found.last_state(job)
    assert (final["state"], final["progress"], final["percent"]) == ("succeeded", 1, 100)
    assert final["lastEventId"] == expected[-1]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_job_watched_from_the_start_is_delivered_whole_and_in_order(
    transport, start_api, secured, workers, browser
):
    api = await start_api(secured)
    await workers.start()
    async with http_for(api.url) as http:
        job = await submit(http, {"steps": 6, "delay_ms": 50})
        page = await open_page(browser, api.url)
        await start_watch(page, [job], transport=transport, key=KEY)
        found = await wait_for_ends(page, 1)
        expected = await history_ids(http, job)
    assert_whole(found, job, expected)
    assert [state["state"] for state in found.states][:1] == ["pending"]
    assert found.statuses[0] == "connecting" and "live" in found.statuses and found.statuses[-1] == "closed"
    assert found.tokens == [{"job": job}]  # one token, asked for once
    assert await page.evaluate("() => window.__watch.transport") == transport


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_view_survives_an_api_restart_without_a_lost_or_repeated_event(
    transport, settings, tmp_path, workers, browser
):
    env = {"JOBTRAIL_API_KEYS": f"acme:{hash_key(KEY)}"}
    process, url = serve(settings, tmp_path, **env)
    try:
        await wait_ready(process, url)
        await workers.start()
        async with http_for(url) as http:
            job = await submit(http, LONG_JOB)
            page = await open_page(browser, url)
            await start_watch(page, [job], transport=transport, key=KEY)
            before = await wait_for_events(page, 5)
            process.kill()  # SIGKILL: no goodbye to any client
            process.wait()
            await asyncio.sleep(1.0)
            process, _ = serve(settings, tmp_path, port=int(url.rsplit(":", 1)[1]), **env)
            await wait_ready(process, url)
            found = await wait_for_ends(page, 1)
            expected = await history_ids(http, job)
    finally:
        process.kill()
        process.wait()
    assert len(before.events) < len(expected)  # broken mid-job
    assert_whole(found, job, expected)
    assert "reconnecting" in found.statuses


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_view_survives_a_redis_outage_without_a_lost_or_repeated_event(
    transport, secured, durable_redis, start_api, tmp_path, browser
):
    settings = msgspec.structs.replace(
        secured, redis_url=durable_redis.url, redis_timeout_s=1.0, lease_ttl_s=2.0, reaper_interval_s=0.5,
        pending_stale_s=2.0,
    )
    api = await start_api(settings)
    workers = Workers(settings, tmp_path)
    try:
        await workers.start()  # before the outage: a worker that starts without Redis exits
        async with http_for(api.url) as http:
            job = await submit(http, LONG_JOB)
            page = await open_page(browser, api.url)
            await start_watch(page, [job], transport=transport, key=KEY)
            before = await wait_for_events(page, 5)
            durable_redis.kill()
            await asyncio.sleep(1.5)
            durable_redis.start()
            found = await wait_for_ends(page, 1)
            expected = await history_ids(http, job)
    finally:
        workers.close()
    assert len(before.events) < len(expected)  # broken mid-job
    assert_whole(found, job, expected)
    assert "reconnecting" in found.statuses


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_expiring_token_is_replaced_and_the_view_goes_on(transport, proxied, browser):
    api_url, proxy, page_url = proxied
    async with http_for(api_url) as http:
        job = await submit(http, LONG_JOB)
        page = await open_page(browser, page_url)
        await start_watch(page, [job], transport=transport, key=KEY, ttl=1)
        before = await wait_for_events(page, 3)
        if transport == "sse":
            # An open event stream outlives its token (it was checked at connect); its
            # reconnect is what meets the 401. /ws ends the socket at expiry by itself.
            await asyncio.sleep(2.0)
            proxy.cut()
        found = await wait_for_ends(page, 1)
        expected = await history_ids(http, job)
    assert len(before.events) < len(expected)
    assert_whole(found, job, expected)
    assert len(found.tokens) >= 2, found.tokens
    assert all(scope == {"job": job} for scope in found.tokens)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_watch_jobs_follows_two_jobs_at_once(transport, start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    async with http_for(api.url) as http:
        jobs = [await submit(http, {"steps": 8, "delay_ms": 60 + 20 * n}) for n in range(2)]
        page = await open_page(browser, api.url)
        await start_watch(page, jobs, mode="jobs", transport=transport, key=KEY)
        found = await wait_for_ends(page, 2)
        expected = {job: await history_ids(http, job) for job in jobs}
    for job in jobs:
        assert_whole(found, job, expected[job])
    if transport == "ws":
        assert found.sockets == 1  # both jobs on ONE WebSocket
        assert found.tokens == [{"feed": True}]  # a feed token covers every job of the tenant
    else:
        assert sorted(scope["job"] for scope in found.tokens) == sorted(jobs)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_watch_jobs_takes_jobs_added_and_drops_jobs_removed(transport, start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    async with http_for(api.url) as http:
        dropped = await submit(http, LONG_JOB)
        page = await open_page(browser, api.url)
        await start_watch(page, [dropped], mode="jobs", transport=transport, key=KEY)
        await wait_for_events(page, 4)
        # One turn of the page's loop: nothing can arrive between the two.
        at_removal = await page.evaluate(
            "(job) => { window.__watch.remove(job); return window.__jt.events.length }", dropped
        )
        added = await submit(http, {"steps": 5, "delay_ms": 50})
        await page.evaluate("(job) => window.__watch.add(job)", added)
        found = await wait_for_ends(page, 1)
        expected = await history_ids(http, added)
        assert await page.evaluate("() => window.__watch.jobs") == []
    assert_whole(found, added, expected)
    assert len(found.ids(dropped)) == at_removal  # nothing of a removed job after remove()
    assert found.ends == [["terminal", added]]
    if transport == "ws":
        assert found.sockets == 1  # the added job came on the socket already open


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_activity_feed_resumes_after_a_drop_without_a_lost_or_repeated_entry(
    transport, proxied, browser
):
    api_url, proxy, page_url = proxied
    async with http_for(api_url) as http:
        page = await open_page(browser, page_url)
        await start_watch(page, [], mode="feed", transport=transport, key=KEY)
        await wait_for(page, lambda found: "live" in found.statuses, "the feed live")
        job = await submit(http, LONG_JOB)
        await wait_for(page, lambda found: "started" in [e["type"] for e in found.events], "started")
        proxy.cut()  # mid-job, between its `started` and its `succeeded`
        found = await wait_for(page, lambda found: "succeeded" in [e["type"] for e in found.events], "succeeded")
        transitions = [e for e in await history(http, job) if e["type"] in ("submitted", "started", "succeeded")]
    entries = [event for event in found.events if event["job"] == job]
    assert [(e["type"], e["event_id"]) for e in entries] == [(e["type"], e["id"]) for e in transitions]
    assert found.tokens[0] == {"feed": True}
    assert "reconnecting" in found.statuses and found.ends == []


async def test_auto_falls_back_to_event_source_when_websockets_fail(start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    async with http_for(api.url) as http:
        job = await submit(http, {"steps": 6, "delay_ms": 50})
        page = await open_page(browser, api.url)
        await start_watch(page, [job], transport="auto", key=KEY, broken_websocket=True)
        found = await wait_for_ends(page, 1)
        expected = await history_ids(http, job)
    assert_whole(found, job, expected)
    assert found.sockets == 2  # two WebSockets that never opened, then EventSource
    assert await page.evaluate("() => window.__watch.transport") == "sse"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_job_that_does_not_exist_ends_the_watch_as_not_found(transport, api, browser):
    page = await open_page(browser, api.url)  # open mode: no credentials needed
    await start_watch(page, ["no-such-job"], transport=transport)
    found = await wait_for_ends(page, 1, timeout=20)
    assert found.ends == [["not found", "no-such-job"]]
    assert found.events == [] and found.statuses[-1] == "closed"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_without_get_token_a_refused_watch_ends_instead_of_retrying(transport, start_api, secured, browser):
    api = await start_api(secured)
    async with http_for(api.url) as http:
        job = await submit(http, {"steps": 1, "delay_ms": 0})
    page = await open_page(browser, api.url)
    await start_watch(page, [job], transport=transport)  # keys are on, and the page has no token
    found = await wait_for_ends(page, 1, timeout=20)
    assert found.ends == [["not authenticated", job]]
    assert found.statuses[-1] == "closed"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_trimmed_history_comes_as_a_gap_with_the_jobs_state(
    transport, api, events, redis_client, keys, browser
):
    await finished_job(events, "trimmed", steps=6)
    ids = await stream_ids(redis_client, keys, "trimmed")
    await redis_client.xtrim(keys.events("trimmed"), maxlen=3, approximate=False)  # someone else's XTRIM
    page = await open_page(browser, api.url)
    await start_watch(page, ["trimmed"], transport=transport, after=ids[0])
    found = await wait_for_ends(page, 1, timeout=20)
    assert [gap["state"]["state"] for gap in found.gaps] == ["succeeded"]
    assert found.ids("trimmed") == ids[-3:]  # what the stream still holds after `after`
    # The summary is the gap's state, and the events it already holds do not fold it backwards.
    assert [(s["state"], s["percent"], s["lastEventId"]) for s in found.states] == [("succeeded", 100, ids[-1])]
    assert found.ends == [["terminal", "trimmed"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_job_deleted_while_watched_ends_the_watch_as_deleted(transport, api, events, client, browser):
    await running_job(events, "doomed")
    await progress(events, "doomed", 1, 4)
    page = await open_page(browser, api.url)
    await start_watch(page, ["doomed"], transport=transport)
    await wait_for_events(page, 3)
    assert (await client.delete("/jobs/doomed")).status_code == 204
    found = await wait_for_ends(page, 1, timeout=20)
    assert found.ends == [["deleted", "doomed"]]
    assert [event["type"] for event in found.events] == ["submitted", "started", "progress"]
    assert found.statuses[-1] == "closed"


async def test_ids_compare_as_numbers_and_the_backoff_doubles_up_to_its_cap_with_jitter(api, browser):
    page = await open_page(browser, api.url)
    found = await page.evaluate("""async () => {
      const {compareIds, backoffDelay} = await import("/ui/jobtrail.js");
      const delays = (attempt) => Array.from({length: 200}, () => backoffDelay(attempt, 100, 1000));
      return {
        order: [compareIds("1700000000000-10", "1700000000000-9"), compareIds("999-0", "1000-0"),
                compareIds("5", "5-0"), compareIds("5-18446744073709551615", "5-18446744073709551614")],
        spans: [0, 1, 2, 3, 4, 30].map((n) => { const d = delays(n); return [Math.min(...d), Math.max(...d)]; }),
      };
    }""")
    assert found["order"] == [1, -1, 0, 1]  # not string order, and sequences past 2**53
    for attempt, (low, high) in zip([0, 1, 2, 3, 4, 30], found["spans"], strict=True):
        cap = min(1000, 100 * 2**attempt)
        assert cap / 2 <= low <= high <= cap, (attempt, low, high)
    assert found["spans"][0][1] - found["spans"][0][0] > 10  # jittered, not one fixed delay

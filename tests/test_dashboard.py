"""The dashboard in a real browser against real servers, used as a person uses it.

A key is given once, a demo job is submitted from the form, and the job page shows its bar
move to 100 % and its state turn succeeded, its timeline equal to the job's history
(`GET /jobs/{id}/history`): through an API restart (a real `jobtrail serve`, killed and
started again on its port) and through tokens that expire mid-job, with no entry lost or
repeated. A job is cancelled from its page; an admin key sees and filters every tenant, a
tenant key its own; 1,000 jobs list in bounded pages that stay quick to use. Screenshots
at 1280x800 and 390x844 land in build/screenshots/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from jobtrail.auth import hash_key, new_key
from jobtrail.events import EventType, StartedData, SubmittedData
from tests.support.api import history, submit, wait_for_state
from tests.support.browser import DESKTOP, PHONE, screenshot
from tests.support.dashboard import (
    WAIT_MS,
    listed_ids,
    sign_in,
    submit_demo,
    timeline_ids,
    wait_for_bar,
    wait_for_timeline_end,
)
from tests.support.dashboard import wait_for_state as wait_for_shown_state
from tests.support.jobs import progress
from tests.support.serve import serve, wait_ready
from tests.support.worker_procs import Workers

pytestmark = pytest.mark.e2e

ACME = new_key()
GLOBEX = new_key()
ADMIN = new_key()
KEYS = f"acme:{hash_key(ACME)}, globex:{hash_key(GLOBEX)}, *:{hash_key(ADMIN)}"
LONG_JOB = {"steps": 40, "delay_ms": 150}  # about 6 s: long enough to break something in the middle


@pytest.fixture
def secured(settings):
    return msgspec.structs.replace(settings, auth="auto", api_keys=KEYS)


@pytest.fixture
async def workers(secured, tmp_path) -> AsyncIterator[Workers]:
    started = Workers(secured, tmp_path)
    yield started
    started.close()


def http_for(url: str, key: str = ACME) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def assert_timeline_is_the_history(page, http: httpx.AsyncClient, job: str) -> list[str]:
    shown = await timeline_ids(page)
    expected = [event["id"] for event in await history(http, job)]
    assert len(shown) == len(set(shown)), f"repeated timeline entries: {shown}"
    assert shown == expected, "the timeline lost or reordered events"
    return shown


async def test_a_newcomer_gives_a_key_submits_a_demo_job_and_watches_it_succeed(start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    page = await browser.new_page(viewport=DESKTOP)
    await page.goto(f"{api.url}/ui/")
    await page.wait_for_selector("#sign-in:not([hidden])")
    await screenshot(page, "dashboard-sign-in")
    await page.keyboard.type("jt_not-a-key")  # the key field has the focus
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#sign-in-error:has-text('refused')")
    await sign_in(page, api.url, ACME)
    assert await page.evaluate("() => sessionStorage.getItem('jobtrail.key')") == ACME

    job = await submit_demo(page, steps=12, delay_ms=300)
    moving = await wait_for_bar(page, 1, 99)
    await screenshot(page, "dashboard-job-running")
    assert 0 < moving < 100
    await wait_for_shown_state(page, "succeeded")
    assert await wait_for_bar(page, 100, 100) == 100
    assert await page.text_content(".job-card .pct") == "100 %"
    await wait_for_timeline_end(page)
    async with http_for(api.url) as http:
        await assert_timeline_is_the_history(page, http, job)
    await page.wait_for_selector(".outcome .result")
    await screenshot(page, "dashboard-job-succeeded")

    await page.get_by_role("link", name="← All jobs").click()
    await page.wait_for_selector(f'tr[data-job="{job}"] .state-succeeded', timeout=WAIT_MS)
    assert await page.eval_on_selector(f'tr[data-job="{job}"] progress', "bar => bar.value") == 100
    await page.reload()  # the key is the tab's: a reload does not ask again
    await page.wait_for_selector(f'tr[data-job="{job}"]', timeout=WAIT_MS)
    await screenshot(page, "dashboard")
    other_tab = await (await browser.new_context()).new_page()
    await other_tab.goto(f"{api.url}/ui/")
    await other_tab.wait_for_selector("#sign-in:not([hidden])"), "another tab has no key"


async def test_the_list_moves_live_bars_and_the_activity_panel_on_a_phone(start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    page = await browser.new_page(viewport=PHONE)
    await sign_in(page, api.url, ACME)
    await page.wait_for_selector("#feed-status[data-status='live']", timeout=WAIT_MS)
    async with http_for(api.url) as http:
        job = await submit(http, {"steps": 10, "delay_ms": 250})
        # No reload: the feed's `submitted` entry brings the job into the list, and its bar moves.
        row = f'tr[data-job="{job}"]'
        await page.wait_for_selector(row, timeout=WAIT_MS)
        await page.wait_for_function(
            "row => { const bar = document.querySelector(`${row} progress`);"
            " return bar && bar.value > 0 && bar.value < 100; }",
            arg=row, timeout=WAIT_MS, polling=50,
        )
        await screenshot(page, "dashboard-phone-list")
        await page.wait_for_selector(f"{row} .state-succeeded", timeout=WAIT_MS)
        assert await page.eval_on_selector(f"{row} progress", "bar => bar.value") == 100
        await page.wait_for_selector(f'#activity li[data-job="{job}"] .state-succeeded', timeout=WAIT_MS)
        await page.click(f"{row} a")
        await wait_for_timeline_end(page)
        await assert_timeline_is_the_history(page, http, job)
        await screenshot(page, "dashboard-phone-job")
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the phone layout scrolls sideways"


async def test_an_export_pdf_from_the_form_offers_its_file_and_its_audit(start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    page = await browser.new_page(viewport=DESKTOP, accept_downloads=True)
    await sign_in(page, api.url, ACME)
    await page.select_option("#submit-kind", "export.pdf")
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_selector("#submit-error:has-text('title')"), "a required field left empty is named"
    await page.get_by_label("title").fill("Q3 sales")
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_function("() => location.hash.startsWith('#/jobs/')", timeout=WAIT_MS)
    await wait_for_shown_state(page, "succeeded")
    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.get_by_role("link", name="Download q3-sales.pdf").click()
    download = await download_info.value
    assert download.suggested_filename == "q3-sales.pdf"
    assert (await download.path()).read_bytes().startswith(b"%PDF-")
    async with page.context.expect_page(timeout=WAIT_MS) as audit_info:
        await page.get_by_role("button", name="Audit PDF").click()
    audit = await audit_info.value
    assert audit.url.startswith("blob:"), "the audit, fetched with the key, opens as a blob"
    await screenshot(page, "dashboard-export-pdf")


async def test_the_job_page_resumes_after_the_api_restarts_with_no_lost_or_repeated_entry(
    settings, tmp_path, workers, browser
):
    env = {"JOBTRAIL_API_KEYS": KEYS}
    process, url = serve(settings, tmp_path, **env)
    try:
        await wait_ready(process, url)
        await workers.start()
        page = await browser.new_page(viewport=DESKTOP)
        await sign_in(page, url, ACME)
        job = await submit_demo(page, **{"steps": 40, "delay_ms": 150})
        await wait_for_bar(page, 5, 60)
        process.kill()  # SIGKILL: no goodbye to the page
        process.wait()
        await page.wait_for_selector(".view-head .status:not([data-status='live'])", timeout=WAIT_MS)
        await screenshot(page, "dashboard-api-down")
        await asyncio.sleep(1.0)
        process, _ = serve(settings, tmp_path, port=int(url.rsplit(":", 1)[1]), **env)
        await wait_ready(process, url)
        await wait_for_shown_state(page, "succeeded")
        await wait_for_timeline_end(page)
        async with http_for(url) as http:
            shown = await assert_timeline_is_the_history(page, http, job)
        assert len(shown) > 40
    finally:
        process.kill()
        process.wait()


async def test_the_view_goes_on_when_its_tokens_expire_mid_job(start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    page = await browser.new_page(viewport=DESKTOP)
    token_requests: list[str] = []
    page.on("request", lambda request: token_requests.append(request.url) if request.url.endswith("/tokens") else None)
    await sign_in(page, api.url, ACME, query="?token_ttl=1")
    job = await submit_demo(page, **LONG_JOB)
    await wait_for_shown_state(page, "succeeded")
    await wait_for_timeline_end(page)
    async with http_for(api.url) as http:
        await assert_timeline_is_the_history(page, http, job)
    job_tokens = [url for url in token_requests if f"/jobs/{job}/tokens" in url]
    assert len(job_tokens) >= 2, f"a 1 s token outlived a 6 s job? token requests: {token_requests}"


async def test_a_job_is_cancelled_from_its_page_after_a_confirmation(start_api, secured, workers, browser):
    api = await start_api(secured)
    await workers.start()
    page = await browser.new_page(viewport=DESKTOP)
    await sign_in(page, api.url, ACME)
    job = await submit_demo(page, steps=200, delay_ms=100)
    await wait_for_bar(page, 1, 90)
    await page.get_by_role("button", name="Cancel job").click()
    dialog = page.locator("dialog#confirm[open]")
    await dialog.wait_for()
    await screenshot(page, "dashboard-confirm-cancel")
    await dialog.get_by_role("button", name="Keep the job").click()  # changing one's mind cancels nothing
    async with http_for(api.url) as http:
        assert (await http.get(f"/jobs/{job}")).json()["cancel_requested"] is False
        await page.get_by_role("button", name="Cancel job").click()
        await dialog.get_by_role("button", name="Cancel job").click()
        await wait_for_shown_state(page, "cancelled")
        await wait_for_timeline_end(page)
        assert (await wait_for_state(http, job, {"cancelled"}))["state"] == "cancelled"
        await assert_timeline_is_the_history(page, http, job)
    assert await page.get_by_role("button", name="Cancel job").count() == 0, "a finished job offers no cancel"
    await page.get_by_role("button", name="Delete job").click()
    await dialog.get_by_role("button", name="Delete job").click()
    await page.wait_for_selector("table.jobs")
    async with http_for(api.url) as http:
        assert (await http.get(f"/jobs/{job}")).status_code == 404


async def test_an_admin_sees_and_filters_every_tenant_and_a_tenant_key_only_its_own(start_api, secured, browser):
    api = await start_api(secured)
    async with http_for(api.url, ACME) as acme, http_for(api.url, GLOBEX) as globex:
        mine = [await submit(acme, {"steps": 1}) for _ in range(3)]
        theirs = [await submit(globex, {"steps": 1}) for _ in range(2)]
    page = await browser.new_page(viewport=DESKTOP)
    await sign_in(page, api.url, ADMIN)
    assert await page.text_content("#who") == "admin key: every tenant"
    await page.wait_for_selector("tr[data-job]", timeout=WAIT_MS)
    assert set(await listed_ids(page)) == set(mine + theirs)
    await page.get_by_label("Tenant").fill("globex")
    await page.get_by_label("Tenant").press("Enter")
    await page.wait_for_function(
        "ids => { const rows = [...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job);"
        " return rows.length === ids.length && ids.every(id => rows.includes(id)); }",
        arg=theirs, timeout=WAIT_MS,
    )
    await screenshot(page, "dashboard-admin-tenant-filter")
    search = page.get_by_label("Search by id or kind")
    await search.fill(theirs[1][:12])  # narrows the page as one types
    assert await listed_ids(page) == [theirs[1]]
    await search.fill(theirs[1])
    await search.press("Enter")  # an exact id opens its page
    await page.wait_for_selector(f'.view-head h1:has-text("{theirs[1]}")', timeout=WAIT_MS)
    assert await page.evaluate("() => document.activeElement.tagName") == "H1", "focus lands on the new view"

    tenant = await (await browser.new_context(viewport=DESKTOP)).new_page()
    await sign_in(tenant, api.url, ACME)
    await tenant.wait_for_selector("tr[data-job]", timeout=WAIT_MS)
    assert set(await listed_ids(tenant)) == set(mine)
    assert await tenant.get_by_label("Tenant").count() == 0, "a tenant key has no tenant filter"
    await tenant.goto(f"{api.url}/ui/#/jobs/{theirs[0]}")
    await tenant.wait_for_selector("main .error:has-text('No such job')", timeout=WAIT_MS)


async def test_a_thousand_jobs_list_in_bounded_pages_with_fifty_bars_moving(start_api, secured, services, browser):
    api = await start_api(secured)
    now = int(time.time() * 1000)
    pending = [f"old-{n:04d}" for n in range(950)]
    running = [f"run-{n:02d}" for n in range(50)]  # the newest: the first page
    for n, job in enumerate(pending + running):
        await services.events.append(
            job, EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1, tenant="acme")
        )
        await services.index.add(job, now - 100_000 + n, "acme")
    for job in running:
        await services.events.append(job, EventType.STARTED, StartedData(worker="w1", attempt=1), attempt=1)
    page = await browser.new_page(viewport=DESKTOP)
    await page.add_init_script(
        "window.__sockets = 0; const Real = window.WebSocket;"
        " window.WebSocket = class extends Real { constructor(...a) { super(...a); window.__sockets++; } };"
    )
    await sign_in(page, api.url, ACME)
    await page.wait_for_selector("tr[data-job]", timeout=WAIT_MS)
    shown = await listed_ids(page)
    assert sorted(shown) == sorted(running), "the newest page is the 50 running jobs"
    assert await page.locator("tr[data-job]").count() <= 50, "the DOM holds one page, not 1,000 rows"
    await page.wait_for_selector(".view-head .status[data-status='live']", timeout=WAIT_MS)

    for step in range(1, 5):
        for job in running:
            await progress(services.events, job, step, 4)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-job] progress')].every(bar => bar.value === 100)",
        timeout=WAIT_MS, polling=100,
    )
    await screenshot(page, "dashboard-fifty-running")
    assert await page.evaluate("() => window.__sockets") == 2, "one socket for the 50 bars, one for the feed"

    older = page.get_by_role("button", name="Older →")
    for number in range(2, 5):
        await older.click()
        await page.wait_for_selector(f".page-no:text-is('Page {number}')", timeout=WAIT_MS)
    assert await page.locator("tr[data-job]").count() <= 50
    target = (await listed_ids(page))[10]
    assert target.startswith("old-")
    started = time.monotonic()
    await page.click(f'tr[data-job="{target}"] td:nth-child(2)')
    await page.wait_for_selector(f'.view-head h1:has-text("{target}")', timeout=WAIT_MS)
    await page.wait_for_selector(".timeline li[data-event-id]", timeout=WAIT_MS)
    assert time.monotonic() - started < 5, "opening a job from a page of a 1,000-job list is quick"

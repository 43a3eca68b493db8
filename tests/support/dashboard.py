"""The dashboard (/ui) driven as a person uses it: sign in, submit, open a job, read what it shows."""

from __future__ import annotations

from playwright.async_api import Page

# Generous: a loaded 2-core machine runs the worker, the API and chromium at once.
WAIT_MS = 30_000


async def sign_in(page: Page, url: str, key: str | None, query: str = "") -> None:
    """Open /ui (with an optional `?query`), give the key when asked, wait for the job list."""
    await page.goto(f"{url}/ui/{query}")
    if key is not None:
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_selector("#app:not([hidden]) main h1:text-is('Jobs')", timeout=WAIT_MS)


async def submit_demo(page: Page, steps: int, delay_ms: int) -> str:
    """Submit a demo job with the form; the job page opens: its id."""
    await page.select_option("#submit-kind", "demo")
    await page.get_by_label("steps").fill(str(steps))
    await page.get_by_label("delay ms").fill(str(delay_ms))
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_function("() => location.hash.startsWith('#/jobs/')", timeout=WAIT_MS)
    await page.wait_for_selector(".job-card", timeout=WAIT_MS)
    return page.url.rsplit("/", 1)[1]


async def bar_value(page: Page) -> int:
    """The job page's progress bar, 0..100."""
    return int(await page.eval_on_selector(".job-card progress", "bar => bar.value"))


async def wait_for_bar(page: Page, low: int, high: int) -> int:
    """Wait until the job page's bar shows a value in [low, high]."""
    await page.wait_for_function(
        "([low, high]) => { const bar = document.querySelector('.job-card progress');"
        " return bar && bar.value >= low && bar.value <= high; }",
        arg=[low, high], timeout=WAIT_MS, polling=50,
    )
    return await bar_value(page)


async def wait_for_state(page: Page, state: str) -> None:
    await page.wait_for_selector(f'dd[data-field="state"] .state-{state}', timeout=WAIT_MS)


async def wait_for_timeline_end(page: Page) -> None:
    """Wait until the timeline holds a terminal event."""
    await page.wait_for_selector(
        '.timeline li[data-type="succeeded"], .timeline li[data-type="failed"], .timeline li[data-type="cancelled"]',
        timeout=WAIT_MS,
    )


async def timeline_ids(page: Page) -> list[str]:
    """The event ids of the job page's timeline, in the order shown."""
    return await page.eval_on_selector_all(
        ".timeline li[data-event-id]", "items => items.map(li => li.dataset.eventId)"
    )


async def listed_ids(page: Page) -> list[str]:
    """The job ids the list shows, top to bottom (hidden rows left out)."""
    return await page.eval_on_selector_all("tr[data-job]:not([hidden])", "rows => rows.map(row => row.dataset.job)")

"""/ui serves the dashboard's static files, without a key, from the installed package."""

from __future__ import annotations

from tests.support.browser import DESKTOP, screenshot


async def test_ui_is_served_without_a_key(client):
    page = await client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>jobtrail" in page.text
    assert (await client.get("/ui/no-such-file.js")).status_code == 404


async def test_a_real_browser_opens_the_dashboard(api, browser):
    page = await browser.new_page(viewport=DESKTOP)
    response = await page.goto(f"{api.url}/ui/")
    assert response is not None and response.status == 200
    assert await page.title() == "jobtrail"
    await screenshot(page, "ui-smoke")

"""A real browser for the dashboard's and jobtrail.js's tests: Debian's chromium, driven by Playwright.

Playwright is only the protocol client here: `executable_path` points it at the system's
chromium (installed by .ci/run when missing), so nothing downloads a browser build. The
flags keep a headless chromium off the network this machine does not have (without them
it keeps opening connections that are refused) and out of a sandbox root cannot use.
Screenshots land in build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.env import ROOT

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ROOT / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium on PATH: .ci/run installs Debian's `chromium` package", pytrace=False)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


async def screenshot(page: Page, name: str) -> Path:
    """Save the page as build/screenshots/<name>.png and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

"""jobtrail.js driven in a real page: start a watch, collect what it delivers, read it back.

The page imports /ui/jobtrail.js from the API it was loaded from, as the dashboard does,
and records every callback in `window.__jt`. Its `getToken` calls the API's token routes
with a key the test passes (and counts the calls). `WebSocket` is wrapped to count the
sockets the module opens, or replaced by one that never connects, to force the fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Page

# Fast reconnects, so a test waits seconds, not the production backoff's cap.
FAST_BACKOFF = {"minDelayMs": 100, "maxDelayMs": 1000}

_START = """
async ({mode, ids, key, ttl, options, brokenWebSocket}) => {
  const jt = window.__jt = {events: [], states: [], ends: [], gaps: [], statuses: [], tokens: [], sockets: 0};
  const Real = window.WebSocket;
  window.WebSocket = brokenWebSocket
    // What a server without /ws (or a proxy that refuses upgrades) looks like to a page.
    ? class { constructor() { jt.sockets++; this.readyState = 0;
        setTimeout(() => { this.readyState = 3; this.onerror?.(new Event("error"));
                           this.onclose?.({code: 1006, reason: ""}); }, 10); }
        send() { throw new Error("not open"); } close() {} }
    : class extends Real { constructor(...args) { super(...args); jt.sockets++; } };
  const m = await import("/ui/jobtrail.js");
  const getToken = key && (async (scope) => {
    jt.tokens.push(scope);
    const path = scope.job ? `/jobs/${encodeURIComponent(scope.job)}/tokens` : "/events/tokens";
    const answer = await fetch(path, {method: "POST", body: JSON.stringify({ttl_s: ttl}),
      headers: {Authorization: `Bearer ${key}`, "Content-Type": "application/json"}});
    if (!answer.ok) throw new Error(`POST ${path}: ${answer.status}`);
    return (await answer.json()).token;
  });
  const opts = {...options, getToken,
    // A feed entry names its job `job_id`, and the event it stands for `event_id`.
    onEvent: (e) => jt.events.push({job: e.job ?? e.job_id, id: e.id, type: e.type, event_id: e.event_id}),
    onState: (s) => jt.states.push(s),
    onGap: (g) => jt.gaps.push(g),
    onEnd: (reason, job) => jt.ends.push([reason, job]),
    onStatus: (s) => jt.statuses.push(s)};
  const watches = {job: () => m.watchJob(ids[0], opts), jobs: () => m.watchJobs(ids, opts),
                   feed: () => m.watchFeed(opts)};
  window.__watch = watches[mode]();
}
"""


@dataclass
class Seen:
    events: list[dict[str, Any]]
    states: list[dict[str, Any]]
    ends: list[list[Any]]
    gaps: list[dict[str, Any]]
    statuses: list[str]
    tokens: list[dict[str, Any]]
    sockets: int

    def ids(self, job: str) -> list[str]:
        return [event["id"] for event in self.events if event["job"] == job]

    def last_state(self, job: str) -> dict[str, Any]:
        return [state for state in self.states if state["job"] == job][-1]


async def start_watch(
    page: Page,
    ids: list[str],
    *,
    mode: str = "job",
    transport: str = "auto",
    key: str | None = None,
    ttl: int = 60,
    after: str | None = None,
    broken_websocket: bool = False,
) -> None:
    """Start watchJob(ids[0]) (mode "job"), watchJobs(ids) ("jobs") or watchFeed() ("feed") in the page."""
    await page.evaluate(_START, {
        "mode": mode, "ids": ids, "key": key, "ttl": ttl, "brokenWebSocket": broken_websocket,
        "options": {"transport": transport, "after": after, **FAST_BACKOFF},
    })


async def seen(page: Page) -> Seen:
    return Seen(**await page.evaluate("() => window.__jt"))


async def wait_for(page: Page, condition: Callable[[Seen], bool], what: str, timeout: float = 30.0) -> Seen:
    """Wait until what the page saw meets `condition`; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition(found := await seen(page)):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout}s; the page saw {found.events} and ends {found.ends}, "
                        f"statuses {found.statuses}")
        await asyncio.sleep(0.05)
    return found


async def wait_for_ends(page: Page, count: int, timeout: float = 60.0) -> Seen:
    """Wait until `count` subscriptions ended (onEnd), then what the page saw."""
    return await wait_for(page, lambda found: len(found.ends) >= count, f"{count} ends", timeout)


async def wait_for_events(page: Page, count: int, timeout: float = 30.0) -> Seen:
    return await wait_for(page, lambda found: len(found.events) >= count, f"{count} events", timeout)

"""A running workload against a `jobtrail serve` process, for the failover tests.

Jobs are submitted continuously through the HTTP API while SSE clients follow them the way
a browser's EventSource does: on any end short of the terminal event (a dropped stream, a
`retry:` goodbye, a 503) they reconnect with Last-Event-ID. Every answer is recorded, with
how long it took, so a test can say what clients saw while Redis failed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.support.sse import messages

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Followed:
    """What one SSE client received for one job, over all its connections."""

    job_id: str
    ids: list[str] = field(default_factory=list)
    gaps: int = 0
    connections: int = 0
    ended: bool = False


@dataclass
class Workload:
    """Submits a `demo` job every `interval_s`; follows every `follow_every`-th one over SSE."""

    http: httpx.AsyncClient
    params: dict[str, int]
    interval_s: float = 0.1
    follow_every: int = 2
    accepted: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    # (seconds since start, status or error, seconds taken) for every submission.
    timeline: list[tuple[float, str, float]] = field(default_factory=list)
    followed: dict[str, Followed] = field(default_factory=dict)
    _followers: list[asyncio.Task[None]] = field(default_factory=list)
    _began: float = field(default_factory=time.monotonic)

    async def submit_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                response = await self.http.post("/jobs", json={"kind": "demo", "params": self.params})
                outcome = str(response.status_code)
            except httpx.TimeoutException:
                outcome = "timeout"
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            self.answers[outcome] += 1
            self.timeline.append((began - self._began, outcome, time.monotonic() - began))
            if outcome == "202":
                job_id = response.json()["id"]
                self.accepted.append(job_id)
                if len(self.accepted) % self.follow_every == 1 or self.follow_every == 1:
                    self.followed[job_id] = Followed(job_id)
                    self._followers.append(asyncio.create_task(self._follow(self.followed[job_id])))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def served_since(self, moment_s: float) -> bool:
        """Whether a submission begun after `moment_s` (since start) was accepted."""
        return any(at > moment_s and outcome == "202" for at, outcome, _ in self.timeline)

    def now_s(self) -> float:
        return time.monotonic() - self._began

    async def followers_done(self, timeout_s: float) -> None:
        """Wait for every SSE client to receive its job's terminal event; fail naming those that did not."""
        _, pending = await asyncio.wait(self._followers, timeout=timeout_s)
        for task in pending:
            task.cancel()
        stuck = [(job.job_id, job.connections, job.ids[-1:]) for job in self.followed.values() if not job.ended]
        assert not stuck, f"SSE clients without their terminal event after {timeout_s:.0f} s " \
                          f"(job, connections, last id): {stuck}"

    async def _follow(self, job: Followed) -> None:
        while not job.ended:
            headers = {"Last-Event-ID": job.ids[-1]} if job.ids else {}
            job.connections += 1
            try:
                async with self.http.stream("GET", f"/jobs/{job.job_id}/events", headers=headers) as response:
                    if response.status_code != 200:
                        await response.aread()
                        self.answers[f"sse {response.status_code}"] += 1
                    else:
                        await self._read(job, response)
            except httpx.TransportError:
                self.answers["sse dropped"] += 1
            if not job.ended:
                await asyncio.sleep(0.2)

    @staticmethod
    async def _read(job: Followed, response: httpx.Response) -> None:
        async for message in messages(response):
            if message.event == "gap":
                job.gaps += 1
            elif message.id is not None:
                job.ids.append(message.id)
                if message.event in TERMINAL:
                    job.ended = True
                    return

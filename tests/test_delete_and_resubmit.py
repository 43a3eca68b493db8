"""A job deleted while it runs, then submitted again with the same Idempotency-Key.

The new job has the old one's id and is also at attempt 1, so only its incarnation (the
id of its `submitted` event) tells the two apart. The API takes the requests; real
runners (in this process, no broker) run the two incarnations side by side, each with a
handler held at a gate so the test decides when the old one goes on.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from jobtrail.events import State
from jobtrail.registry import _KINDS, Kind
from jobtrail.workers.context import JobContext
from jobtrail.workers.runner import Runner
from tests.support.sse import open_stream

KIND = "test.gated"
KEY = {"Idempotency-Key": "replayed-order-42"}


class GatedParams(msgspec.Struct):
    label: str = "x"


class Gates:
    """One handler call per incarnation: reports, waits at its gate, reports again, returns."""

    def __init__(self) -> None:
        self.calls = 0
        self.reported = [asyncio.Event(), asyncio.Event()]
        self.gates = [asyncio.Event(), asyncio.Event()]
        self.stopped: list[BaseException | None] = [None, None]

    async def handler(self, params: GatedParams, ctx: JobContext) -> dict[str, str]:
        run = self.calls
        self.calls += 1
        who = ["old", "new"][run]
        try:
            await ctx.progress(0.5, f"{who}: half way")
            self.reported[run].set()
            await self.gates[run].wait()
            await ctx.progress(0.9, f"{who}: nearly done")
            await ctx.log(f"{who}: done")
        except BaseException as exc:
            self.stopped[run] = exc
            raise
        return {"by": who}


@pytest.fixture
def gates():
    gates = Gates()
    _KINDS[KIND] = Kind(KIND, GatedParams, gates.handler)
    yield gates
    del _KINDS[KIND]


async def test_the_deleted_jobs_worker_and_sse_client_never_reach_the_job_submitted_again_under_its_id(
    client, events, settings, gates, caplog
):
    body = {"kind": KIND, "params": {}, "max_attempts": 1}
    first = await client.post("/jobs", json=body, headers=KEY)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    old_run = asyncio.create_task(Runner(events, settings, name="old-worker").run(job_id))
    await asyncio.wait_for(gates.reported[0].wait(), 10)

    async with open_stream(client, f"/jobs/{job_id}/events") as old_stream:
        assert [m.event for m in await old_stream.events(3)] == ["submitted", "started", "progress"]

        assert (await client.delete(f"/jobs/{job_id}")).status_code == 204
        again = await client.post("/jobs", json=body, headers=KEY)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == job_id
        new_run = asyncio.create_task(Runner(events, settings, name="new-worker").run(job_id))
        await asyncio.wait_for(gates.reported[1].wait(), 10)

        # The old client is told, and is not carried into the new job.
        assert await old_stream.rest(timeout=10) == []
        assert "job was deleted" in old_stream.received[-1].comments

    gates.gates[0].set()  # the old handler goes on, as if nothing had happened
    await asyncio.wait_for(old_run, 10)
    # Its reports are queued (a runner's context batches them): the write fails behind it,
    # and its attempt is abandoned as it ends, with no outcome written.
    assert any("abandoned" in r.getMessage() and job_id in r.getMessage() for r in caplog.records), (
        "the old attempt is abandoned"
    )
    new_job = await events.state(job_id)
    assert (new_job.state, new_job.progress, new_job.message) == (State.RUNNING, 0.5, "new: half way")

    gates.gates[1].set()
    await asyncio.wait_for(new_run, 10)
    history = [event async for event in events.events(job_id)]
    assert [(e.type.value, e.data.get("worker") or e.data.get("message")) for e in history] == [
        ("submitted", None), ("started", "new-worker"), ("progress", "new: half way"),
        ("progress", "new: nearly done"), ("log", "new: done"), ("succeeded", None),
    ]
    done = await events.state(job_id)
    assert (done.state, done.attempt, done.result) == (State.SUCCEEDED, 1, {"by": "new"})

"""Declaring kinds: the checks at registration, phases enforced in the handler, GET /kinds, and a
worker that meets a kind it does not know. The API in this process; a real worker where one runs.

Kinds a test registers here are removed afterwards (`registry`), so the other tests see the
built-in kinds only.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from jobtrail.auth import hash_key, new_key
from jobtrail.events import EventType, SubmittedData
from jobtrail.registry import _KINDS, DuplicateKind, Kind, kind
from jobtrail.workers.context import JobContext, PermanentFailure, UnknownPhase
from jobtrail.workers.kinds.demo import DemoParams
from tests.support.env import ROOT

FINISH_S = 30.0


class NoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


async def nothing(params: NoParams, ctx: JobContext) -> None:
    """Does nothing."""


@pytest.fixture
def registry() -> Iterator[None]:
    """The registry as it was before the test, restored after it."""
    saved = dict(_KINDS)
    yield
    _KINDS.clear()
    _KINDS.update(saved)


def test_registering_a_name_again_with_another_handler_raises_naming_both(registry):
    kind("test.twice", NoParams)(nothing)
    kind("test.twice", NoParams)(nothing)  # the same declaration again changes nothing

    async def other(params: NoParams, ctx: JobContext) -> None:
        pass

    with pytest.raises(DuplicateKind, match=r"'test\.twice' is registered twice: by tests\.test_kinds\.nothing"):
        kind("test.twice", NoParams)(other)
    with pytest.raises(DuplicateKind):
        kind("test.twice", NoParams, phases=["a"])(nothing)
    assert _KINDS["test.twice"].handler is nothing


@pytest.mark.parametrize(
    ("declare", "error", "fragment"),
    [
        (lambda: kind("acme invoice", NoParams), ValueError, "letters, digits"),
        (lambda: kind("test.dict", dict), TypeError, "must be a msgspec.Struct class"),  # type: ignore[arg-type]
        (lambda: kind("test.str", NoParams, phases="collect"), TypeError, "a list of names"),
        (lambda: kind("test.empty", NoParams, phases=[]), ValueError, "non-empty list"),
        (lambda: kind("test.dup", NoParams, phases=["a", "b", "a"]), ValueError, "listed twice"),
    ],
)
def test_a_kind_declared_wrongly_is_refused_where_it_is_declared(registry, declare, error, fragment):
    before = set(_KINDS)
    with pytest.raises(error, match=fragment):
        declare()(nothing)
    assert set(_KINDS) == before


def test_a_handler_that_is_not_async_is_refused(registry):
    def sync_handler(params: NoParams, ctx: JobContext) -> None:
        pass

    with pytest.raises(TypeError, match=r"sync_handler must be an `async def`"):
        kind("test.sync", NoParams)(sync_handler)  # type: ignore[arg-type]


async def started_job(events, job_id: str) -> None:
    data = SubmittedData(kind="test.phases", params={}, max_attempts=3)
    await events.append(job_id, EventType.SUBMITTED, data)
    await events.append(job_id, EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)


async def test_a_phase_the_kind_does_not_declare_raises_at_once_naming_its_phases(events):
    await started_job(events, "j")
    spec = Kind("test.phases", NoParams, nothing, ("collect", "render", "upload"))
    ctx = JobContext(events, "j", 1, min_interval_s=60, kind=spec)
    await ctx.phase("collect")
    await ctx.progress(0.5, phase="render")
    message = "phase 'rendering' is not one of kind 'test.phases''s phases: collect, render, upload"
    with pytest.raises(UnknownPhase, match=message) as raised:
        await ctx.phase("rendering")
    assert isinstance(raised.value, PermanentFailure), "a bug in the handler: no retry would fix it"
    with pytest.raises(UnknownPhase, match="'uplaod'"):
        await ctx.progress(0.9, phase="uplaod")  # raised before coalescing: nothing is held back
    await ctx.close()
    written = [(e.type.value, e.data.get("phase")) async for e in events.events("j")]
    assert written[2:] == [("phase", "collect"), ("progress", "render")]


async def test_a_kind_without_phases_accepts_any_phase(events):
    await started_job(events, "j")
    ctx = JobContext(events, "j", 1, min_interval_s=0, kind=Kind("test.free", NoParams, nothing))
    await ctx.phase("anything")
    await ctx.progress(0.5, phase="at all")
    assert (await events.state("j")).phase == "at all"


async def test_get_kinds_lists_every_kind_with_its_params_schema_and_phases(client, registry):
    kind("test.listed", NoParams, phases=["one", "two"])(nothing)
    response = await client.get("/kinds")
    assert response.status_code == 200, response.text
    listed = {k["name"]: k for k in response.json()["kinds"]}
    assert [k["name"] for k in response.json()["kinds"]] == sorted(listed)
    assert {"demo", "export.pdf", "export.zip", "test.listed"} <= set(listed)
    assert listed["demo"]["params_schema"] == msgspec.json.decode(msgspec.json.encode(msgspec.json.schema(DemoParams)))
    assert listed["demo"]["phases"] is None
    assert listed["export.pdf"]["phases"] == ["collect", "render", "write"]
    assert listed["export.zip"]["phases"] == ["collect", "bundle"]
    assert listed["test.listed"] == {
        "name": "test.listed", "phases": ["one", "two"], "description": "Does nothing.",
        "params_schema": {"$ref": "#/$defs/NoParams", "$defs": {"NoParams": {
            "title": "NoParams", "type": "object", "properties": {}, "required": [], "additionalProperties": False,
        }}},
    }
    openapi = (await client.get("/schema/openapi.json")).json()
    assert "KindList" in openapi["paths"]["/kinds"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]["$ref"]


async def test_get_kinds_needs_a_valid_key_like_the_other_routes(start_api, settings):
    key = new_key()
    api = await start_api(msgspec.structs.replace(settings, auth="auto", api_keys=f"acme:{hash_key(key)}"))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        assert (await http.get("/kinds")).status_code == 401
        assert (await http.get("/kinds", headers={"Authorization": "Bearer wrong"})).status_code == 401
        answer = await http.get("/kinds", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    assert "demo" in {k["name"] for k in answer.json()["kinds"]}


@pytest.mark.e2e
async def test_a_worker_that_does_not_know_the_kind_fails_the_job_at_once_naming_the_kinds_it_knows(
    client, registry, start_worker
):
    kind("test.only_in_the_api", NoParams)(nothing)  # the API knows it; the worker process does not
    start_worker()
    response = await client.post("/jobs", json={"kind": "test.only_in_the_api", "params": {}, "max_attempts": 3})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + FINISH_S
    while (job := (await client.get(f"/jobs/{job_id}")).json())["state"] != "failed":
        assert job["state"] in ("pending", "running"), job
        assert time.monotonic() < deadline, f"job still {job['state']} after {FINISH_S}s"
        await asyncio.sleep(0.1)
    assert job["error"] == {
        "type": "UnknownKind",
        "message": "unknown job kind 'test.only_in_the_api'; known kinds: demo, export.pdf, export.zip",
    }
    history = (await client.get(f"/jobs/{job_id}/history")).json()["events"]
    assert [e["type"] for e in history] == ["submitted", "started", "failed"], "failed at once, not retried"


def test_the_public_package_exports_what_handler_authors_need_without_importing_the_web_framework():
    code = (
        "import sys, jobtrail\n"
        "assert {'litestar', 'redis', 'taskiq', 'uvicorn'}.isdisjoint(sys.modules), 'import jobtrail is cheap'\n"
        "from jobtrail.registry import kind\n"
        "from jobtrail.workers.context import JobCancelled, JobContext, PermanentFailure\n"
        "assert (jobtrail.kind, jobtrail.JobContext, jobtrail.PermanentFailure, jobtrail.JobCancelled) == "
        "(kind, JobContext, PermanentFailure, JobCancelled)\n"
        "assert 'litestar' not in sys.modules, 'a handler module needs no web framework'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

"""The API against its own OpenAPI schema: schemathesis generates the requests from it.

Every answer must be no 5xx, a documented status code, a documented content type, and a
body that matches the documented schema. The requests go to the real app (create_app)
on the test's real Redis, through schemathesis' in-process ASGI client, and reach real
jobs in every state, so success bodies are checked too, not only errors. The run is
deterministic (fixed seed, derandomized, no example database): examples, boundary cases
(the coverage phase) and bounded fuzzing, each with valid and invalid input.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator

import hypothesis
import msgspec
import pytest
import redis.asyncio as aioredis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python.asgi import ASGIClient, get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobtrail.api.app import create_app
from jobtrail.artifacts import ArtifactStore
from jobtrail.auth import hash_key, new_key
from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.index import JobIndex
from jobtrail.keys import Keys
from jobtrail.offsets import id_key
from tests.support.redis_server import free_port

# Access control is on, as in production, with an admin key: it reaches every seeded job
# (tests/test_auth.py covers what tenants may not reach).
ADMIN_KEY = new_key()
# The export service's routes are on too, so they are checked like the native ones.
ACCESS = {"auth": "on", "api_keys": f"*:{hash_key(ADMIN_KEY)}", "legacy_routes": "on"}
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}

CONFORMS = [status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = [not_a_server_error, *CONFORMS]

CONFIG = schemathesis.Config.from_dict({
    "seed": 4,
    "headers": HEADERS,
    "generation": {"mode": "all", "max-examples": 25, "deterministic": True, "database": "none"},
})


def openapi_document() -> dict:
    """The schema the app serves at /schema/openapi.json, built without starting it."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:6379/0", **ACCESS))
    return json.loads(msgspec.json.encode(app.openapi_schema.to_schema()))


# The activity feed (`GET /events`) never ends by itself, so it has no answer to check.
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG).exclude(path="/events")

SUBMITTED = {"kind": "demo", "params": {"steps": 2, "delay_ms": 0, "fail_at_step": None}, "max_attempts": 2}
STARTED = {"worker": "w", "attempt": 1}
# One job per state; each entry is the job's events after `submitted`.
HISTORIES: dict[str, list[tuple[EventType, dict]]] = {
    "pending": [],
    "running": [(EventType.STARTED, STARTED), (EventType.PROGRESS, {"progress": 0.5, "phase": "p", "message": "m"})],
    "succeeded": [(EventType.STARTED, STARTED), (EventType.SUCCEEDED, {"result": {"n": 1}})],
    "failed": [(EventType.STARTED, STARTED), (EventType.FAILED, {"error": {"type": "Boom", "message": "x"}})],
    "cancelled": [(EventType.CANCEL_REQUESTED, {"reason": "r"}), (EventType.CANCELLED, {"reason": "r"})],
}
FINISHED = ("succeeded", "failed", "cancelled", "exported")


async def seed(settings: Settings) -> None:
    """The jobs of HISTORIES, plus `exported`, which succeeded with a file, all listed in the index."""
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    events = EventLog(redis, Keys(settings.prefix), settings.retention_s, activity_maxlen=settings.activity_maxlen)
    with ArtifactStore(settings.artifact_dir).writer("exported", "report.pdf", "application/pdf") as (file, out):
        file.write(b"%PDF-1.4\n")
    histories = {**HISTORIES, "exported": [(EventType.STARTED, STARTED), (EventType.SUCCEEDED, {"artifact": out[0]})]}
    try:
        for job_id, history in histories.items():
            first = await events.append(job_id, EventType.SUBMITTED, SUBMITTED)
            attempt = 1 if history and history[0][0] is EventType.STARTED else None  # cancelled never started
            for event_type, data in history:
                await events.append(job_id, event_type, data, attempt=attempt)
            await JobIndex(redis, events.keys).add(job_id, id_key(first.id)[0])
    finally:
        await redis.aclose()


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, **ACCESS)


@pytest.fixture
def client(secured: Settings) -> Iterator[ASGIClient]:
    """The app on the test's Redis and key prefix, with its jobs; its lifespan ends with the test."""
    asyncio.run(seed(secured))
    with get_client(create_app(secured)) as asgi:
        yield asgi
    shutdown_lifespans()


def aim_at_a_job(case: schemathesis.Case, turn: Iterator[int] = itertools.count()) -> None:  # noqa: B008 - one counter for every call
    """Point a valid job id at the seeded jobs in turn (and every so often at no job, for the 404).

    A job's SSE stream gets only finished jobs, whose streams end; DELETE keeps the
    generated id, since deleting the seeded jobs would leave the other operations nothing.
    """
    meta = case.meta
    path = meta.components.get(ParameterLocation.PATH) if meta else None
    if path is None or path.mode is not GenerationMode.POSITIVE or case.method == "DELETE":
        return
    pool = FINISHED if case.operation.path.endswith("/events") else (*HISTORIES, "exported")
    pick = next(turn) % (len(pool) + 1)
    if pick < len(pool):
        case.path_parameters["job_id"] = pool[pick]


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_api_answers_as_its_openapi_schema_says(case: schemathesis.Case, client: ASGIClient) -> None:
    aim_at_a_job(case)
    case.call_and_validate(session=client, base_url=client.base_url, headers=HEADERS, checks=CHECKS)


def test_answers_random_input_cannot_reach_are_documented_too(secured: Settings) -> None:
    # Redis down (a 503 is right there, so only conformance is checked), a body over the
    # size limit on each route that takes one, no key at all, and a tenant over its limit.
    down = msgspec.structs.replace(secured, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.5)
    limited = msgspec.structs.replace(secured, submissions_per_minute=1)
    oversized = {"reason": "x" * secured.max_body_bytes}
    demo = schema["/jobs"]["POST"].Case(body={"kind": "demo"})
    cases = {
        down: [(schema["/readyz"]["GET"].Case(), HEADERS), (demo, HEADERS)],
        secured: [
            (schema["/jobs"]["POST"].Case(body={"kind": "demo", "params": oversized}), HEADERS),
            (schema["/jobs/{job_id}/cancel"]["POST"].Case(path_parameters={"job_id": "x"}, body=oversized), HEADERS),
            (schema["/jobs"]["GET"].Case(), {}),
        ],
        limited: [(demo, HEADERS), (demo, HEADERS)],
    }
    statuses = []
    for app_settings, app_cases in cases.items():
        with get_client(create_app(app_settings)) as asgi:
            for case, headers in app_cases:
                response = case.call_and_validate(
                    session=asgi, base_url=asgi.base_url, headers=headers, checks=CONFORMS
                )
                statuses.append(response.status_code)
        shutdown_lifespans()
    assert statuses == [503, 503, 413, 413, 401, 202, 429]

"""Another tenant's job and a missing one take the same work to refuse (app/api/common.py visible_job)."""

from __future__ import annotations

import statistics
import time

import pytest
import redis.asyncio as aioredis

from jobtrail.api.common import visible_job
from jobtrail.auth import Principal
from jobtrail.errors import JobNotFound
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, StartedData, SubmittedData, SucceededData

ACME, GLOBEX = Principal(tenant="acme"), Principal(tenant="globex")


class Recording(aioredis.Redis):
    """A real client that also writes down every command it sends and the reply it gets."""

    calls: list[tuple[tuple, object]]

    async def execute_command(self, *args, **options):
        reply = await super().execute_command(*args, **options)
        self.calls.append((args, reply))
        return reply


@pytest.fixture
async def recorded(redis_url, keys, settings):
    client = Recording.from_url(redis_url, decode_responses=True)
    client.calls = []
    yield EventLog(client, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)
    await client.aclose()


async def acme_job(events, job_id: str) -> None:
    """A finished job of acme's with a sizeable hash (params and a result to decode)."""
    params = {"steps": 3, "note": "x" * 2000}
    await events.append(job_id, EventType.SUBMITTED,
                        SubmittedData(kind="demo", params=params, max_attempts=1, tenant="acme"))
    await events.append(job_id, EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append(job_id, EventType.SUCCEEDED, SucceededData(result={"rows": list(range(300))}), attempt=1)


async def refusal(events, job_id: str) -> list[tuple[tuple, object]]:
    """What Redis was asked, and answered, while globex was refused `job_id` (its id replaced by ID)."""
    events.redis.calls.clear()
    with pytest.raises(JobNotFound):
        await visible_job(events, GLOBEX, job_id)

    def hide(value: object) -> object:
        return value.replace(job_id, "ID") if isinstance(value, str) else value

    return [(tuple(hide(a) for a in args), reply) for args, reply in events.redis.calls]


async def test_another_tenants_job_is_refused_with_the_same_redis_calls_and_replies_as_a_missing_one(recorded):
    await acme_job(recorded, "theirs")
    await refusal(recorded, "warm-up")  # the script is loaded: both cases meet it loaded

    foreign, missing = await refusal(recorded, "theirs"), await refusal(recorded, "missing")

    assert foreign == missing
    assert len(foreign) == 1, "one round trip"
    assert foreign[0][1] == [], "the foreign job's fields never leave Redis"
    assert (await visible_job(recorded, ACME, "theirs")).result == {"rows": list(range(300))}
    assert (await visible_job(recorded, Principal(tenant=None, admin=True), "theirs")).tenant == "acme"


async def test_another_tenants_job_is_refused_about_as_fast_as_a_missing_one(events):
    await acme_job(events, "theirs")
    timings: dict[str, list[float]] = {"theirs": [], "missing": []}
    for _ in range(400):
        for job_id, samples in timings.items():  # interleaved, so load on the machine hits both alike
            start = time.perf_counter()
            with pytest.raises(JobNotFound):
                await visible_job(events, GLOBEX, job_id)
            samples.append(time.perf_counter() - start)
    foreign, missing = (statistics.median(timings[k]) for k in ("theirs", "missing"))
    # A wide margin: the proof is the test above; this only catches a gross difference.
    assert foreign < missing * 1.5, f"foreign {foreign * 1e6:.0f} µs, missing {missing * 1e6:.0f} µs"

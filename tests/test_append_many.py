"""A batch of reports (append_many.lua) writes what appending them one by one writes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from jobtrail.errors import AttemptSuperseded
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.jobstate import dedupe_fields, state_fields
from jobtrail.keys import Keys
from jobtrail.reducer import fold

text = st.text(max_size=20)
DATA = {
    EventType.PROGRESS: st.fixed_dictionaries(
        {"progress": st.floats(0, 1)},
        optional={"message": text, "phase": text, "current": st.integers(0, 100), "total": st.integers(0, 100)},
    ),
    EventType.PHASE: st.fixed_dictionaries({"phase": text}, optional={"message": text}),
    EventType.LOG: st.fixed_dictionaries({"level": st.sampled_from(["info", "error"]), "message": text}),
}
DATA_EXAMPLE = {"kind": "demo", "params": {}, "max_attempts": 3}
report = st.sampled_from(list(DATA)).flatmap(lambda t: st.tuples(st.just(t), DATA[t]))
batches = st.lists(st.lists(report, min_size=1, max_size=8), min_size=1, max_size=6)
# Written by each append, so they differ between two jobs however alike their events.
OWN_FIELDS = ("updated_at", "last_event_id", "incarnation", "started_at", "created_at")


def alike(fields: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in fields.items() if name not in OWN_FIELDS}


async def started(events: EventLog, job_id: str) -> str:
    own = (await events.append(job_id, EventType.SUBMITTED, DATA_EXAMPLE)).id
    await events.append(job_id, EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    return own


async def entries(client: aioredis.Redis, events: EventLog, job_id: str) -> list[dict[str, str]]:
    stream = await client.xrange(events.keys.events(job_id))
    return [{k: v for k, v in fields.items() if k != "at"} for _, fields in stream]


async def scenario(redis_url: str, sequence: list[list[tuple[EventType, dict]]]) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    events = EventLog(client, Keys(f"test-many-{uuid.uuid4().hex[:12]}"), retention_s=60, activity_maxlen=0)
    try:
        own = {job_id: await started(events, job_id) for job_id in ("batched", "alone")}
        n = 0
        for batch in sequence:
            keys = [f"c1.w.{n + i}" for i in range(len(batch))]
            n += len(batch)
            await events.append_many("batched", batch, attempt=1, keys=keys, slot="c1.w", incarnation=own["batched"])
            for (event_type, data), key in zip(batch, keys, strict=True):
                await events.append("alone", event_type, data, attempt=1, key=key, slot="c1.w",
                                    incarnation=own["alone"])
        batched, alone = [await client.hgetall(events.keys.job(j)) for j in ("batched", "alone")]
        assert alike(state_fields(batched)) == alike(state_fields(alone))
        assert await entries(client, events, "batched") == await entries(client, events, "alone")
        remembered = [dedupe_fields(fields) for fields in (batched, alone)]
        last_keys = [{slot: key_id.split(" ")[0] for slot, key_id in r.items()} for r in remembered]
        assert last_keys == [{"@c1.w": keys[-1]}] * 2
        assert state_fields(batched) == fold([event async for event in events.events("batched")])
    finally:
        for job_id in ("batched", "alone"):
            await client.delete(*events.keys.job_keys(job_id))
        await client.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=batches)
def test_a_batch_of_reports_writes_what_appending_them_one_by_one_writes(redis_url, sequence):
    asyncio.run(scenario(redis_url, sequence))


async def test_a_batch_sent_again_after_a_lost_reply_lands_once(events, redis_client, keys):
    await started(events, "j")
    batch = [(EventType.PROGRESS, {"progress": 0.1}), (EventType.LOG, {"level": "info", "message": "x"})]
    first = await events.append_many("j", batch, attempt=1, keys=["k1", "k2"], slot="s")
    again = await events.append_many("j", batch, attempt=1, keys=["k1", "k2"], slot="s")
    assert (again.duplicate, again.id) == (True, first.id)
    assert await redis_client.xlen(keys.events("j")) == 4


async def test_a_batch_for_an_attempt_that_is_not_the_jobs_writes_nothing(events, redis_client, keys):
    await started(events, "j")
    with pytest.raises(AttemptSuperseded):
        await events.append_many("j", [(EventType.PROGRESS, {"progress": 0.5})] * 2, attempt=2, keys=["a", "b"],
                                 slot="s")
    assert await redis_client.xlen(keys.events("j")) == 2


async def test_an_event_that_changes_the_job_is_refused_in_a_batch(events, redis_client, keys):
    await started(events, "j")
    with pytest.raises(ResponseError, match="append it alone"):
        await events.append_many("j", [(EventType.PROGRESS, {"progress": 0.5}), (EventType.SUCCEEDED, {})],
                                 attempt=1, keys=["a", "b"], slot="s")
    assert await redis_client.xlen(keys.events("j")) == 2

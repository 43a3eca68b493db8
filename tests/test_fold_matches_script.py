"""Property: after any sequence of appends, the script's hash equals the fold of the stream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtrail.errors import JobExists, JobNotFound, TransitionRefused
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.jobstate import state_fields
from jobtrail.keys import Keys
from jobtrail.reducer import fold

text = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
error = st.fixed_dictionaries({"type": st.sampled_from(["ValueError", "Boom"]), "message": text})

DATA = {
    EventType.SUBMITTED: st.fixed_dictionaries(
        {"kind": st.just("demo"), "params": st.dictionaries(text, json_values, max_size=3),
         "max_attempts": st.integers(1, 5)}
    ),
    EventType.STARTED: st.fixed_dictionaries({"worker": text, "attempt": st.integers(1, 5)}),
    EventType.PROGRESS: st.fixed_dictionaries(
        {"progress": st.floats(0, 1)},
        optional={"message": text, "phase": text, "current": st.integers(0, 100), "total": st.integers(0, 100)},
    ),
    EventType.PHASE: st.fixed_dictionaries({"phase": text}, optional={"message": text}),
    EventType.LOG: st.fixed_dictionaries({"level": st.sampled_from(["info", "error"]), "message": text}),
    EventType.CANCEL_REQUESTED: st.fixed_dictionaries({}, optional={"reason": text}),
    EventType.RETRYING: st.fixed_dictionaries(
        {"error": error, "delay_s": st.floats(0, 10), "next_attempt": st.integers(2, 5)}
    ),
    EventType.SUCCEEDED: st.fixed_dictionaries(
        {},
        optional={
            "result": json_values,
            "artifact": st.fixed_dictionaries(
                {"name": text, "size_bytes": st.integers(0, 2**40), "sha256": text, "content_type": text}
            ),
        },
    ),
    EventType.FAILED: st.fixed_dictionaries({"error": error}),
    EventType.CANCELLED: st.fixed_dictionaries({}, optional={"reason": text}),
}

# Weighted towards the events that keep a job alive, so sequences get long.
event_types = st.sampled_from(
    [EventType.SUBMITTED, EventType.STARTED, EventType.PROGRESS, EventType.PROGRESS, EventType.PHASE,
     EventType.LOG, EventType.CANCEL_REQUESTED, EventType.RETRYING, EventType.STARTED, *EventType]
)
appends = st.lists(
    st.tuples(
        event_types.flatmap(lambda t: st.tuples(st.just(t), DATA[t])),
        st.none() | st.integers(0, 5),  # attempt
        st.none() | st.sampled_from(["a", "b", "c"]),  # idempotency key
        st.sampled_from([None, "own", "other"]),  # incarnation the writer names
    ),
    max_size=25,
)


async def scenario(redis_url: str, sequence) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(f"test-prop-{uuid.uuid4().hex[:12]}")
    events = EventLog(client, keys, retention_s=60, activity_maxlen=100)
    try:
        own = (await events.append("job", EventType.SUBMITTED, DATA_EXAMPLE)).id
        for (event_type, data), attempt, key, incarnation in sequence:
            named = {"own": own, "other": "1-1"}.get(incarnation or "")
            with contextlib.suppress(TransitionRefused, JobExists, JobNotFound):
                await events.append("job", event_type, data, attempt=attempt, key=key, incarnation=named)
        stored = state_fields(await client.hgetall(keys.job("job")))
        assert stored["incarnation"] == own
        folded = fold([event async for event in events.events("job")])
        assert stored == folded
    finally:
        await client.delete(*keys.job_keys("job"))
        await client.aclose()


DATA_EXAMPLE = {"kind": "demo", "params": {}, "max_attempts": 3}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=appends)
def test_state_hash_always_equals_the_fold_of_the_stream(redis_url, sequence):
    asyncio.run(scenario(redis_url, sequence))

"""The append script against real Redis: the transition table, idempotency, retention."""

from __future__ import annotations

import pytest

from jobtrail.errors import AttemptSuperseded, JobExists, JobNotFound, JobReplaced, TransitionRefused
from jobtrail.eventlog import EventLog
from jobtrail.events import ABSENT, RULES, TERMINAL_STATES, EventType, State
from jobtrail.jobstate import JobState, dedupe_fields, state_fields
from jobtrail.reducer import fold

SAMPLE_DATA = {
    EventType.SUBMITTED: {"kind": "demo", "params": {"steps": 1}, "max_attempts": 3},
    EventType.STARTED: {"worker": "w1", "attempt": 1},
    EventType.PROGRESS: {"progress": 0.5, "message": "half", "phase": "render"},
    EventType.PHASE: {"phase": "write", "message": "writing"},
    EventType.LOG: {"level": "info", "message": "hello"},
    EventType.CANCEL_REQUESTED: {"reason": "user"},
    EventType.RETRYING: {"error": {"type": "E", "message": "boom"}, "delay_s": 1.0, "next_attempt": 2},
    EventType.SUCCEEDED: {"result": {"rows": 3}},
    EventType.FAILED: {"error": {"type": "E", "message": "boom"}},
    EventType.CANCELLED: {"reason": "user"},
}

# The shortest event path that leaves a job in each state.
PATH_TO = {
    State.PENDING: [EventType.SUBMITTED],
    State.RUNNING: [EventType.SUBMITTED, EventType.STARTED],
    State.SUCCEEDED: [EventType.SUBMITTED, EventType.STARTED, EventType.SUCCEEDED],
    State.FAILED: [EventType.SUBMITTED, EventType.FAILED],
    State.CANCELLED: [EventType.SUBMITTED, EventType.CANCELLED],
}


async def put_job_in(events: EventLog, job_id: str, state: str) -> None:
    for event_type in PATH_TO.get(state, []):
        await events.append(job_id, event_type, SAMPLE_DATA[event_type])


CASES = [
    (state, event_type)
    for state in [ABSENT, *State]
    for event_type in EventType
]


@pytest.mark.parametrize(("state", "event_type"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
async def test_every_transition_is_allowed_or_refused_as_the_table_says(events, redis_client, keys, state, event_type):
    await put_job_in(events, "job", state)
    before = (await redis_client.hgetall(keys.job("job")), await redis_client.xlen(keys.events("job")))

    if state in RULES[event_type].allowed:
        appended = await events.append("job", event_type, SAMPLE_DATA[event_type])
        expected = RULES[event_type].next_state or (State.PENDING if state == ABSENT else state)
        assert appended.state == expected
        assert (await events.state("job")).state == expected
        assert await redis_client.xlen(keys.events("job")) == before[1] + 1
        return

    refused = JobExists if event_type is EventType.SUBMITTED else TransitionRefused
    expected_error = {ABSENT: JobNotFound}.get(state, refused)
    with pytest.raises(expected_error):
        await events.append("job", event_type, SAMPLE_DATA[event_type])
    after = (await redis_client.hgetall(keys.job("job")), await redis_client.xlen(keys.events("job")))
    assert after == before, "a refused event must write nothing"


async def test_nothing_may_follow_a_terminal_event(events):
    for state in TERMINAL_STATES:
        job_id = f"job-{state}"
        await put_job_in(events, job_id, state)
        for event_type in EventType:
            with pytest.raises((TransitionRefused, JobExists)):
                await events.append(job_id, event_type, SAMPLE_DATA[event_type])


async def test_repeated_idempotency_key_is_dropped_and_returns_the_first_event(events, redis_client, keys):
    await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    first = await events.append("job", EventType.STARTED, SAMPLE_DATA[EventType.STARTED], attempt=1, key="started:1")
    again = await events.append("job", EventType.STARTED, SAMPLE_DATA[EventType.STARTED], attempt=1, key="started:1")
    assert not first.duplicate
    assert again.duplicate and again.id == first.id and again.state == State.RUNNING
    assert await redis_client.xlen(keys.events("job")) == 2
    assert (await events.state("job")).event_count == 2


async def test_a_jobs_own_writers_keys_live_in_its_state_hash_and_a_retry_of_each_is_a_duplicate(
    events, redis_client, keys
):
    # The submission's, the runner's and the outcome's keys: no dedupe hash for such a job.
    path = [(EventType.SUBMITTED, None, "submitted:abc"), (EventType.STARTED, 1, "started:1"),
            (EventType.RETRYING, 1, "retrying:1"), (EventType.STARTED, 2, "started:2"),
            (EventType.SUCCEEDED, 2, "succeeded")]
    first = []
    for event_type, attempt, key in path:  # each retried as a lost reply's retry is: at once
        if event_type is EventType.SUCCEEDED:  # a job context's report, in its slot
            report = await events.append("job", EventType.PROGRESS, {"progress": 0.5}, attempt=2, key="c2.w.1",
                                         slot="c2.w")
            assert dedupe_fields(await redis_client.hgetall(keys.job("job"))) == {
                "@": "submitted:abc", "@started:1": first[1].id, "@retrying:1": first[2].id,
                "@started:2": first[3].id, "@c2.w": f"c2.w.1 {report.id}"}
        first.append(await events.append("job", event_type, SAMPLE_DATA[event_type], attempt=attempt, key=key))
        again = await events.append("job", event_type, SAMPLE_DATA[event_type], attempt=attempt, key=key)
        assert again.duplicate and again.id == first[-1].id, key
    assert not await redis_client.exists(keys.dedupe("job"))
    stored = await redis_client.hgetall(keys.job("job"))
    # The submission's key under '@' (its id is the incarnation); the terminal event dropped the
    # others but its own, as no earlier write can land any more.
    assert dedupe_fields(stored) == {"@": "submitted:abc", "@succeeded": first[-1].id}
    assert JobState.from_hash("job", stored) == JobState.from_hash("job", state_fields(stored))
    for n in (0, -1):  # the submission's and the outcome's still answer a retry after the end
        event_type, attempt, key = path[n]
        again = await events.append("job", event_type, SAMPLE_DATA[event_type], attempt=attempt, key=key)
        assert again.duplicate and again.id == first[n].id, key
    assert await redis_client.xlen(keys.events("job")) == len(path) + 1


async def test_a_key_an_older_script_kept_in_the_dedupe_hash_still_answers_duplicate(events, redis_client, keys):
    # Written as the scripts before kept every key: key -> id in the dedupe hash, nothing in the state hash.
    for event_type, attempt, key in [(EventType.SUBMITTED, None, "submitted:old"), (EventType.STARTED, 1, "started:1"),
                                     (EventType.SUCCEEDED, 1, "succeeded")]:
        appended = await events.append("job", event_type, SAMPLE_DATA[event_type], attempt=attempt, key=key)
        await redis_client.hdel(keys.job("job"), "@", f"@{key}")
        await redis_client.hset(keys.dedupe("job"), key, appended.id)
        again = await events.append("job", event_type, SAMPLE_DATA[event_type], attempt=attempt, key=key)
        assert again.duplicate and again.id == appended.id, key
    with pytest.raises(TransitionRefused):
        await events.append("job", EventType.SUCCEEDED, SAMPLE_DATA[EventType.SUCCEEDED], attempt=1, key="other")


async def test_an_api_clients_keyed_reports_stay_out_of_the_state_hash(events, redis_client, keys):
    await put_job_in(events, "job", State.RUNNING)
    first = await events.append("job", EventType.LOG, SAMPLE_DATA[EventType.LOG], key="client-1")
    again = await events.append("job", EventType.LOG, SAMPLE_DATA[EventType.LOG], key="client-1")
    assert again.duplicate and again.id == first.id
    assert await redis_client.hgetall(keys.dedupe("job")) == {"client-1": first.id}
    assert dedupe_fields(await redis_client.hgetall(keys.job("job"))) == {}


async def test_a_slot_remembers_only_its_latest_key_and_still_drops_a_repeat_of_it(events, redis_client, keys):
    await put_job_in(events, "j1", State.RUNNING)
    appended = []
    for n in range(1, 6):
        appended.append(await events.append(
            "j1", EventType.PROGRESS, {"progress": n / 10}, key=f"c1.w.{n}", slot="c1.w"
        ))
    again = await events.append("j1", EventType.PROGRESS, {"progress": 0.5}, key="c1.w.5", slot="c1.w")
    assert not any(a.duplicate for a in appended)
    assert again.duplicate and again.id == appended[-1].id
    # An older key of the slot is forgotten: only the latest write can be retried.
    # The slot is a field of the state hash, which the HMGET reads anyway: no dedupe hash.
    assert dedupe_fields(await redis_client.hgetall(keys.job("j1"))) == {"@c1.w": f"c1.w.5 {appended[-1].id}"}
    assert not await redis_client.exists(keys.dedupe("j1"))
    # A key that merely starts like the remembered one is another write.
    longer = await events.append("j1", EventType.PROGRESS, {"progress": 0.6}, key="c1.w.50", slot="c1.w")
    assert not longer.duplicate
    assert await redis_client.xlen(keys.events("j1")) == 2 + 6


async def test_terminal_event_sets_retention_ttl_on_every_key_of_the_job(redis_client, keys, events):
    short = EventLog(redis_client, keys, retention_s=120, activity_maxlen=100)
    await short.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    await short.append("job", EventType.STARTED, SAMPLE_DATA[EventType.STARTED], key="started:1")
    # A keyed report of an API client's is remembered in the dedupe hash (started:1 in the state hash).
    await short.append("job", EventType.LOG, SAMPLE_DATA[EventType.LOG], key="client-log-1")
    for key in keys.job_keys("job"):
        assert await redis_client.ttl(key) == -1, f"{key} must not expire while the job is live"
    await short.append("job", EventType.SUCCEEDED, SAMPLE_DATA[EventType.SUCCEEDED])
    for key in keys.job_keys("job"):
        assert 110 <= await redis_client.ttl(key) <= 120, key


async def test_a_finished_stream_is_written_back_compactly_with_its_entries_ids_and_ttl(redis_client, keys, events):
    short = EventLog(redis_client, keys, retention_s=120, activity_maxlen=100)
    for event_type in PATH_TO[State.RUNNING]:
        await short.append("job", event_type, SAMPLE_DATA[event_type])
    for n in range(1, 11):
        await short.append("job", EventType.PROGRESS, {"progress": n / 20, "message": f"step {n}"})
    before = await redis_client.xrange(keys.events("job"))
    live_bytes = await redis_client.memory_usage(keys.events("job"), samples=0)

    done = await short.append("job", EventType.SUCCEEDED, SAMPLE_DATA[EventType.SUCCEEDED])

    after = await redis_client.xrange(keys.events("job"))
    assert after[:-1] == before and after[-1][0] == done.id
    info = await redis_client.xinfo_stream(keys.events("job"))
    assert info["last-generated-id"] == done.id and info["entries-added"] == len(before) + 1
    assert 110 <= await redis_client.ttl(keys.events("job")) <= 120
    # A live stream's node holds the 4 KB Redis gives it ahead; the finished one, its entries.
    assert live_bytes > 4096 > await redis_client.memory_usage(keys.events("job"), samples=0)
    # And it takes further entries as any stream does (a repair's, a migration's).
    await redis_client.xadd(keys.events("job"), {"e": "5", "d": '"info","x"', "k": ""})
    assert (await redis_client.xinfo_stream(keys.events("job")))["length"] == len(before) + 2


async def test_the_enqueue_claim_goes_with_the_terminal_event_and_only_then(redis_client, keys, events):
    claim = keys.enqueue_claim("job")
    await redis_client.set(claim, "token")
    for event_type in PATH_TO[State.RUNNING]:
        await events.append("job", event_type, SAMPLE_DATA[event_type])
    await events.append("job", EventType.PROGRESS, SAMPLE_DATA[EventType.PROGRESS])
    assert await redis_client.get(claim) == "token"
    await events.append("job", EventType.SUCCEEDED, SAMPLE_DATA[EventType.SUCCEEDED])
    assert not await redis_client.exists(claim)


async def test_an_event_without_an_at_is_stamped_with_its_entry_ids_milliseconds(events, redis_client, keys):
    submitted = await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    given = await events.append("job", EventType.LOG, SAMPLE_DATA[EventType.LOG], at_ms=1_700_000_000_123)
    assert submitted.at == int(submitted.id.split("-")[0])
    assert given.at == 1_700_000_000_123
    first, second = [e async for e in events.events("job")]
    assert (first.at, second.at) == (submitted.at, given.at)
    state = await redis_client.hgetall(keys.job("job"))
    assert (state["created_at"], state["updated_at"]) == (str(submitted.at), str(given.at))


async def test_state_hash_records_progress_timestamps_and_result(events):
    await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED], at_ms=1_700_000_000_000)
    await events.append("job", EventType.STARTED, SAMPLE_DATA[EventType.STARTED], attempt=1, at_ms=1_700_000_001_000)
    await events.append("job", EventType.PROGRESS, SAMPLE_DATA[EventType.PROGRESS])
    mid = await events.state("job")
    assert (mid.state, mid.progress, mid.phase, mid.message, mid.attempt) == (State.RUNNING, 0.5, "render", "half", 1)
    assert mid.created_at.timestamp() == 1_700_000_000 and mid.started_at.timestamp() == 1_700_000_001
    assert mid.finished_at is None
    last = await events.append("job", EventType.SUCCEEDED, SAMPLE_DATA[EventType.SUCCEEDED])
    done = await events.state("job")
    assert (done.state, done.progress, done.result, done.event_count) == (State.SUCCEEDED, 1.0, {"rows": 3}, 4)
    assert done.last_event_id == last.id and done.finished_at is not None
    assert done.kind == "demo" and done.params == {"steps": 1} and done.max_attempts == 3


async def test_events_without_an_attempt_inherit_the_jobs_current_attempt(events):
    await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    await events.append("job", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    await events.append("job", EventType.CANCEL_REQUESTED, {})
    [*_, last] = [e async for e in events.events("job")]
    assert last.attempt == 1 and (await events.state("job")).cancel_requested


async def test_an_event_of_a_superseded_attempt_is_refused_and_writes_nothing(events):
    await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    with pytest.raises(AttemptSuperseded):  # `started` must open the next attempt, not skip one
        await events.append("job", EventType.STARTED, {"worker": "w", "attempt": 2}, attempt=2)
    await events.append("job", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    error = {"error": {"type": "Stalled", "message": "taken over"}, "delay_s": 0, "next_attempt": 2}
    await events.append("job", EventType.RETRYING, error, attempt=1)
    await events.append("job", EventType.STARTED, {"worker": "w2", "attempt": 2}, attempt=2)
    before = await events.state("job")
    # The worker of attempt 1 wakes up and writes as if nothing had happened.
    for event_type, data in [(EventType.PROGRESS, {"progress": 1.0}), (EventType.SUCCEEDED, {"result": 1}),
                             (EventType.RETRYING, error), (EventType.FAILED, {"error": error["error"]})]:
        with pytest.raises(AttemptSuperseded) as refused:
            await events.append("job", event_type, data, attempt=1)
        assert refused.value.current == 2
    assert await events.state("job") == before
    assert len([e async for e in events.events("job")]) == 4


async def test_an_event_for_a_deleted_incarnation_of_the_job_is_refused_and_writes_nothing(events):
    first = await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    await events.append("job", EventType.STARTED, {"worker": "old", "attempt": 1}, attempt=1, incarnation=first.id)
    await events.delete("job")
    second = await events.append("job", EventType.SUBMITTED, SAMPLE_DATA[EventType.SUBMITTED])
    await events.append("job", EventType.STARTED, {"worker": "new", "attempt": 1}, attempt=1, incarnation=second.id)
    before = await events.state("job")
    assert await events.state_and_incarnation("job") == (before, second.id)
    # The old worker goes on: same attempt number, same idempotency keys, another job.
    for event_type, data, key in [
        (EventType.PROGRESS, {"progress": 0.5}, None), (EventType.LOG, SAMPLE_DATA[EventType.LOG], None),
        (EventType.STARTED, {"worker": "old", "attempt": 1}, "started:1"),
        (EventType.SUCCEEDED, {"result": "old"}, "succeeded"),
    ]:
        with pytest.raises(JobReplaced):
            await events.append("job", event_type, data, attempt=1, key=key, incarnation=first.id)
    assert await events.state("job") == before
    assert [e.data.get("worker") async for e in events.events("job")] == [None, "new"]


async def test_append_reports_cancel_requested_to_the_producer(events):
    await put_job_in(events, "job", State.RUNNING)
    assert not (await events.append("job", EventType.PROGRESS, {"progress": 0.1})).cancel_requested
    await events.append("job", EventType.CANCEL_REQUESTED, {"reason": "stop"})
    assert (await events.append("job", EventType.PROGRESS, {"progress": 0.2})).cancel_requested


async def test_invalid_event_data_is_rejected_before_anything_is_written(events, redis_client, keys):
    await put_job_in(events, "job", State.RUNNING)
    with pytest.raises(Exception, match="progress"):
        await events.append("job", EventType.PROGRESS, {"progress": 1.5})
    assert await redis_client.xlen(keys.events("job")) == 2


async def test_rebuild_restores_a_corrupted_hash_from_the_stream(events, redis_client, keys):
    await put_job_in(events, "job", State.SUCCEEDED)
    good = await redis_client.hgetall(keys.job("job"))
    await redis_client.hset(keys.job("job"), mapping={"state": "running", "progress": "0.1"})
    await redis_client.hdel(keys.job("job"), "result")
    before, after = await events.rebuild("job", dry_run=True)
    assert before != after and await redis_client.hget(keys.job("job"), "state") == "running"
    await events.rebuild("job")
    repaired = await redis_client.hgetall(keys.job("job"))
    assert repaired == good
    assert state_fields(repaired) == fold([e async for e in events.events("job")])
    assert await redis_client.ttl(keys.job("job")) > 0, "a repaired terminal job keeps its retention"


async def test_rebuild_of_an_unknown_job_raises_not_found(events):
    with pytest.raises(JobNotFound):
        await events.rebuild("nope")

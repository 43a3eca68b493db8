"""jobtrail.Client and AsyncClient against the real API on a real port, with real Redis.

Every test runs with both clients: `Client` (its blocking calls in a thread, since the
API serves from this test's event loop) and `AsyncClient`. Jobs are driven by
appending events to the event log, and what a client receives is compared with the
job's stream as XRANGE returns it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jobtrail.artifacts import ArtifactStore
from jobtrail.auth import hash_key
from jobtrail.client import (
    Conflict,
    Event,
    Gap,
    InvalidParams,
    InvalidRequest,
    JobNotFound,
    JobState,
    RateLimited,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from jobtrail.events import EventType, ProgressData, SucceededData
from tests.support.flavors import Flavor
from tests.support.jobs import eventually, finished_job, progress, running_job, stream_ids
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture(params=["sync", "async"])
async def flavors(request):
    """Make clients of this test's flavor (closed at teardown)."""
    made: list[Flavor] = []

    def make(url: str, api_key: str | None = None, **options: Any) -> Flavor:
        made.append(Flavor(request.param, url, api_key, **options))
        return made[-1]

    yield make
    for flavor in made:
        await flavor.close()


@pytest.fixture
def jt(flavors, api) -> Flavor:
    return flavors(api.url)


async def finish(events, job_id: str, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    await events.append(job_id, EventType.SUCCEEDED, SucceededData(result={"ok": True}))


# --- plain calls ---


async def test_submit_returns_the_pending_job_and_a_repeated_idempotency_key_the_same_job(jt):
    job = await jt.call("submit", "demo", {"steps": 3}, idempotency_key="k-1", max_attempts=2)
    again = await jt.call("submit", "demo", {"steps": 3}, idempotency_key="k-1", max_attempts=2)

    assert isinstance(job, JobState) and job.state == "pending" and not job.terminal
    assert (job.kind, job.max_attempts, job.params["steps"]) == ("demo", 2, 3)
    assert again.id == job.id


async def test_get_sends_the_etag_and_returns_the_cached_state_while_nothing_changed(jt, events):
    await running_job(events, "etag-job")
    first = await jt.call("get", "etag-job")
    second = await jt.call("get", "etag-job")
    assert second is first, "a 304 hands back the state already decoded, not a new one"

    await progress(events, "etag-job", 1, 4)
    third = await jt.call("get", "etag-job")
    assert third is not first and third.progress == 0.25 and third.last_event_id != first.last_event_id


async def test_history_iterates_every_page_in_order(jt, events, redis_client, keys):
    await running_job(events, "long")
    for step in range(1, 24):
        await progress(events, "long", step, 23)

    got = await jt.collect("history", "long", page_size=5)

    assert [e.id for e in got] == await stream_ids(redis_client, keys, "long")  # 25 events over 5 full pages
    assert all(isinstance(e, Event) for e in got) and got[0].type == "submitted" and got[-1].data["current"] == 23
    after = await jt.collect("history", "long", after=got[20].id, page_size=5)
    assert [e.id for e in after] == [e.id for e in got[21:]]


async def test_cancel_delete_and_token(jt, events):
    job = await jt.call("submit", "demo", {})
    cancelled = await jt.call("cancel", job.id, "no longer needed")
    assert cancelled.state == "cancelled"
    assert (await jt.call("get", job.id)).state == "cancelled"

    token = await jt.call("token", job.id)
    assert token.job_id == job.id and token.token in token.events_url

    assert await jt.call("delete", job.id) is None
    with pytest.raises(JobNotFound):
        await jt.call("get", job.id)


async def test_download_artifact_streams_the_file_into_place(jt, events, settings, tmp_path):
    await running_job(events, "made-file")
    body = bytes(range(256)) * 4096  # 1 MiB
    with ArtifactStore(settings.artifact_dir).writer("made-file", "data.bin", "application/octet-stream") as (
        file, out
    ):
        file.write(body)
    await events.append("made-file", EventType.SUCCEEDED, SucceededData(result={}, artifact=out[0]))

    target = tmp_path / "down" / "copy.bin"
    target.parent.mkdir()
    assert await jt.call("download_artifact", "made-file", target) == target
    assert target.read_bytes() == body
    assert [p.name for p in target.parent.iterdir()] == ["copy.bin"], "no temporary file is left behind"


# --- errors ---


async def test_api_errors_arrive_as_typed_errors(jt, events):
    await finished_job(events, "done")
    with pytest.raises(JobNotFound) as missing:
        await jt.call("get", "no-such-job")
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    assert "no-such-job" in missing.value.detail
    with pytest.raises(InvalidParams) as invalid:
        await jt.call("submit", "no.such.kind", {})
    assert invalid.value.status == 422
    with pytest.raises(Conflict) as conflict:
        await jt.call("cancel", "done")
    assert conflict.value.code == "transition_refused"
    with pytest.raises(InvalidRequest):
        await jt.collect("history", "done", after="not-an-id")
    with pytest.raises(JobNotFound):
        await jt.collect("events", "no-such-job")


async def test_missing_or_wrong_keys_are_unauthorized(flavors, start_api, settings):
    secured = await start_api(msgspec_replace(settings, auth="auto", api_keys=f"acme:{hash_key('jt_right')}"))
    with pytest.raises(Unauthorized) as no_key:
        await flavors(secured.url).call("get", "any")
    assert no_key.value.status == 401
    with pytest.raises(Unauthorized):
        await flavors(secured.url, "jt_wrong").call("submit", "demo", {})
    job = await flavors(secured.url, "jt_right").call("submit", "demo", {})
    assert job.tenant == "acme"


async def test_over_the_submission_limit_is_rate_limited_with_retry_after(flavors, start_api, settings):
    limited = await start_api(msgspec_replace(settings, submissions_per_minute=1))
    jt = flavors(limited.url)
    await jt.call("submit", "demo", {})
    with pytest.raises(RateLimited) as over:
        await jt.call("submit", "demo", {})
    assert over.value.status == 429 and over.value.retry_after is not None and over.value.retry_after > 0


async def test_an_api_that_does_not_answer_is_unavailable(flavors):
    proxy = TcpProxy("127.0.0.1", 9)  # the discard port: nothing listens there
    url = await proxy.start()
    with pytest.raises(Unavailable) as down:
        await flavors(url).call("get", "any")
    assert down.value.status is None and down.value.code == "unreachable"
    with pytest.raises(Unavailable):
        await flavors(url, give_up_after_s=0.5).collect("events", "any")
    await proxy.stop()


def msgspec_replace(settings, **changes):
    import msgspec

    return msgspec.structs.replace(settings, **changes)


# --- event streams ---


async def test_events_replay_a_finished_job_then_stop(jt, events, redis_client, keys):
    await finished_job(events, "done", steps=5)
    got = await jt.collect("events", "done")
    assert [e.id for e in got] == await stream_ids(redis_client, keys, "done")
    assert got[-1].type == "succeeded" and got[-1].terminal

    ids = [e.id for e in got]
    assert [e.id for e in await jt.collect("events", "done", after=ids[3])] == ids[4:]
    assert await jt.collect("events", "done", after=ids[-1]) == [], "a 204 ends the stream at once"


async def test_events_resume_exactly_once_after_the_network_drops_mid_stream(flavors, api, events, redis_client, keys):
    proxy = TcpProxy(*api.url.removeprefix("http://").split(":"))
    jt = flavors(await proxy.start(), max_reconnect_delay_s=1.0)
    await running_job(events, "flaky")
    reconnects: list[float] = []
    reader = asyncio.create_task(jt.collect("events", "flaky", on_reconnect=lambda delay, _: reconnects.append(delay)))

    for round_ in range(3):
        for step in range(1, 6):
            await progress(events, "flaky", round_ * 5 + step, 15)
        await asyncio.sleep(0.3)  # some of them reach the client, then the line goes
        await eventually(lambda: proxy.open_connections > 0, timeout=10)
        proxy.cut()
    await finish(events, "flaky")
    got = await asyncio.wait_for(reader, 30)

    assert [e.id for e in got] == await stream_ids(redis_client, keys, "flaky"), "each event once, in order"
    assert len(reconnects) >= 3 and proxy.connections >= 4


async def test_events_resume_on_another_api_after_a_retry_hinted_close(flavors, api, start_api, settings, events,
                                                                         redis_client, keys):
    other = await start_api(settings)
    proxy = TcpProxy(*api.url.removeprefix("http://").split(":"))  # a load balancer, in front of `api` first
    jt = flavors(await proxy.start())
    await running_job(events, "drained")
    reconnects: list[str] = []
    reader = asyncio.create_task(
        jt.collect("events", "drained", on_reconnect=lambda _, why: reconnects.append(why.code))
    )
    await progress(events, "drained", 1, 2)
    await asyncio.sleep(0.5)

    proxy.upstream = tuple(other.url.removeprefix("http://").split(":"))  # type: ignore[assignment]
    api.services.hub.drain()  # what SIGTERM does: its streams end with a `retry:` hint
    await progress(events, "drained", 2, 2)
    await finish(events, "drained")
    got = await asyncio.wait_for(reader, 30)

    assert [e.id for e in got] == await stream_ids(redis_client, keys, "drained")
    assert reconnects == ["stream_closed"], "the stream ended cleanly, once, and resumed on the other API"


async def test_a_gap_is_surfaced_before_the_events_the_stream_still_holds(jt, events, redis_client, keys):
    await running_job(events, "trimmed")
    for step in range(1, 5):
        await progress(events, "trimmed", step, 4)
    ids = await stream_ids(redis_client, keys, "trimmed")
    await redis_client.xtrim(keys.events("trimmed"), minid=ids[3], approximate=False)
    await finish(events, "trimmed")

    got = await jt.collect("events", "trimmed", after=ids[1])
    assert isinstance(got[0], Gap) and got[0].state.id == "trimmed"
    assert [e.id for e in got[1:]] == (await stream_ids(redis_client, keys, "trimmed"))


async def test_activity_follows_the_feed_with_filters(jt, events):
    await running_job(events, "fed")
    await finish(events, "fed")
    # No offset starts at the live tail (as the API does); `0-0` replays what the feed holds.
    got = await jt.collect("activity", state="succeeded", after="0-0", limit=1)
    assert (got[0].job_id, got[0].type, got[0].state) == ("fed", "succeeded", "succeeded")
    everything = await jt.collect("activity", after="0-0", limit=3)
    assert [t.type for t in everything] == ["submitted", "started", "succeeded"]
    assert await jt.collect("activity", after=everything[0].id, limit=2) == everything[1:]


# --- waiting ---


async def test_wait_returns_the_final_state_when_the_job_ends(jt, events):
    await running_job(events, "slow")
    finishing = asyncio.create_task(finish(events, "slow", delay=0.5))
    final = await asyncio.wait_for(jt.call("wait", "slow", timeout=20), 30)
    await finishing
    assert final.state == "succeeded" and final.result == {"ok": True}
    assert (await jt.call("wait", "slow")).state == "succeeded", "a finished job answers at once"


async def test_wait_gives_up_after_its_timeout(jt, events):
    await running_job(events, "stuck")
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        await jt.call("wait", "stuck", timeout=1.0)
    assert 0.9 < time.monotonic() - started < 5


async def test_wait_times_out_while_events_keep_arriving(jt, events):
    await running_job(events, "busy")

    async def keep_busy() -> None:
        for step in range(100):
            await events.append("busy", EventType.PROGRESS, ProgressData(progress=step / 100))
            await asyncio.sleep(0.05)

    busy = asyncio.create_task(keep_busy())
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        await jt.call("wait", "busy", timeout=1.0)
    assert time.monotonic() - started < 4
    busy.cancel()


async def test_events_raise_job_not_found_when_the_job_is_deleted_while_followed(jt, client, events):
    await running_job(events, "doomed")
    reader = asyncio.create_task(jt.collect("events", "doomed"))
    await asyncio.sleep(0.5)
    assert (await client.delete("/jobs/doomed")).status_code == 204
    with pytest.raises(JobNotFound):
        await asyncio.wait_for(reader, 30)

"""Submitting under failure and races: a lost reply, repeats of a job whose creator died, many repeats at once."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from jobtrail.artifacts import ArtifactStore
from jobtrail.auth import hash_key, new_key
from jobtrail.eventlog import EventLog
from jobtrail.index import JobIndex
from jobtrail.limits import WINDOW_S
from jobtrail.service import JobService
from jobtrail.store import Store
from jobtrail.workers.queue import job_of
from tests.support.lossy_proxy import ReplyLosingProxy


class Queued(list):
    async def __call__(self, job_id: str) -> None:
        self.append(job_id)


def service_on(events: EventLog, settings, queued: Queued, index: JobIndex | None = None) -> JobService:
    return JobService(events, index or JobIndex(events.redis, events.keys), queued, settings,
                      ArtifactStore(settings.artifact_dir))


async def indexed(redis_client, keys, job_id: str, tenant: str) -> tuple[bool, bool]:
    """Whether the job is in the global index and in its tenant's."""
    return (await redis_client.zscore(keys.index(), job_id) is not None,
            await redis_client.zscore(keys.tenant_index(tenant), job_id) is not None)


def queue_messages_for(entries, job_id: str) -> int:
    return sum(job_of(fields) == job_id for _, fields in entries)


@pytest.fixture
async def proxy(redis_url):
    lossy = ReplyLosingProxy(redis_url)
    yield lossy
    await lossy.stop()


async def test_a_submission_whose_reply_was_lost_is_created_indexed_and_queued(
    proxy, settings, keys, redis_client
):
    url = await proxy.start()
    redis = Store(msgspec.structs.replace(settings, redis_url=url)).pooled()  # the API's own client, retry and all
    try:
        events = EventLog(redis, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen)
        queued = Queued()
        service = service_on(events, settings, queued)
        await service.submit("demo", {"steps": 1}, None)  # the append script is loaded now
        proxy.lose_reply_to(b"submitted")

        job, created = await service.submit("demo", {"steps": 2}, None, idempotency_key="k", tenant="acme")

        assert proxy.lost == 1, "the first append ran and its reply was lost; redis-py sent it again"
        assert created, "our own retried append made the job: 202, not 200"
        assert await indexed(redis_client, keys, job.id, "acme") == (True, True)
        assert queued.count(job.id) == 1
        assert [e.type async for e in events.events(job.id)] == ["submitted"]
    finally:
        await redis.aclose()


async def test_a_repeat_of_a_submission_whose_creator_died_before_indexing_lists_and_queues_it(
    events, settings, keys, redis_client
):
    class DyingIndex(JobIndex):
        def queue_add(self, pipe, job_id, created_ms, tenant=None):
            raise RedisConnectionError("the API died right after the append")

    queued = Queued()
    with pytest.raises(RedisConnectionError):
        await service_on(events, settings, queued, DyingIndex(events.redis, keys)).submit(
            "demo", {"steps": 1}, None, idempotency_key="k", tenant="acme"
        )
    service = service_on(events, settings, queued)
    job_id = await service.job_id_for("k", "acme")
    assert await indexed(redis_client, keys, job_id, "acme") == (False, False) and queued == []

    job, created = await service.submit("demo", {"steps": 1}, None, idempotency_key="k", tenant="acme")

    assert (job.id, created) == (job_id, False)
    assert await indexed(redis_client, keys, job_id, "acme") == (True, True)
    created_ms = round(job.created_at.timestamp() * 1000)
    assert await redis_client.zscore(keys.index(), job_id) == created_ms, "listed where its creation time puts it"
    assert queued == [job_id]


async def test_fifty_parallel_idempotent_submissions_queue_one_message(client, redis_client, keys):
    body = {"kind": "demo", "params": {"steps": 1}}
    answers = await asyncio.gather(*(
        client.post("/jobs", json=body, headers={"Idempotency-Key": "once"}) for _ in range(50)
    ))

    assert sorted(a.status_code for a in answers) == [200] * 49 + [202]
    (job_id,) = {a.json()["id"] for a in answers}
    assert queue_messages_for(await redis_client.xrange(keys.queue()), job_id) == 1

    more = await asyncio.gather(*(
        client.post("/jobs", json=body, headers={"Idempotency-Key": "once"}) for _ in range(50)
    ))
    assert {a.status_code for a in more} == {200}
    assert queue_messages_for(await redis_client.xrange(keys.queue()), job_id) == 1


async def test_a_repeat_queues_a_job_nobody_queued_and_only_once(events, settings, keys, redis_client):
    queued = Queued()
    service = service_on(events, settings, queued)
    job, _ = await service.submit("demo", {"steps": 1}, None, idempotency_key="k")
    await redis_client.delete(keys.enqueue_claim(job.id))  # as if the creator died before its claim
    queued.clear()

    await asyncio.gather(*(service.submit("demo", {"steps": 1}, None, idempotency_key="k") for _ in range(20)))

    assert queued == [job.id]


async def test_deleting_a_job_removes_its_enqueue_claim(client, redis_client, keys):
    answer = await client.post("/jobs", json={"kind": "demo"}, headers={"Idempotency-Key": "claimed"})
    job_id = answer.json()["id"]
    assert await redis_client.exists(keys.enqueue_claim(job_id))
    assert (await client.delete(f"/jobs/{job_id}")).status_code == 204
    assert not await redis_client.exists(*keys.all_job_keys(job_id))


async def test_a_job_without_a_key_takes_no_enqueue_claim_and_is_queued_once(client, redis_client, keys):
    job_id = (await client.post("/jobs", json={"kind": "demo"})).json()["id"]
    assert not await redis_client.exists(keys.enqueue_claim(job_id))
    assert queue_messages_for(await redis_client.xrange(keys.queue()), job_id) == 1


async def within_one_window() -> None:
    """Wait for the next minute when this one ends within 10 s: the counts must stay in one window."""
    left = WINDOW_S - time.time() % WINDOW_S
    if left < 10:
        await asyncio.sleep(left + 0.1)


async def test_only_jobs_created_count_against_the_submission_limit(start_api, settings):
    await within_one_window()
    acme = new_key()
    limited = msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(acme)}", submissions_per_minute=3
    )
    api = await start_api(limited)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {acme}"}) as http:

        async def post(body: dict, key: str | None = None) -> int:
            headers = {"Idempotency-Key": key} if key else {}
            return (await http.post("/jobs", json=body, headers=headers)).status_code

        assert await post({"kind": "demo"}, key="invoice-1") == 202
        for _ in range(10):  # a client retrying with its key, as it should
            assert await post({"kind": "demo"}, key="invoice-1") == 200
        assert await post({"kind": "demo", "params": {"steps": 2}}, key="invoice-1") == 409
        assert await post({"kind": "no-such-kind"}) == 422
        assert await post({"kind": "demo", "params": {"steps": -1}}) == 422
        assert await post({"kind": "demo", "max_attempts": 0}) == 422
        assert await post({"kind": "demo", "unknown": 1}) == 400

        assert [await post({"kind": "demo"}) for _ in range(3)] == [202, 202, 429], "3 jobs created, then full"
        assert await post({"kind": "demo"}) == 429, "a refused request creates nothing and takes nothing"


async def test_parallel_submissions_do_not_slip_past_the_limit_together(start_api, settings):
    await within_one_window()
    acme = new_key()
    limited = msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(acme)}", submissions_per_minute=5
    )
    api = await start_api(limited)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {acme}"}) as http:
        answers = await asyncio.gather(*(http.post("/jobs", json={"kind": "demo"}) for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [202] * 5 + [429] * 15

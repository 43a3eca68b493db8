"""The REST contract of /jobs, against the API on a real port and real Redis (no worker)."""

from __future__ import annotations

from datetime import datetime

import pytest

from jobtrail.events import EventType, StartedData
from tests.support.topologies import over_topologies

# The REST API on one server, a Sentinel group and a Cluster (the job index is one key, each
# job's keys share a slot).
pytestmark = over_topologies

DEMO = {"kind": "demo", "params": {"steps": 3, "delay_ms": 0}}


async def submit(client, body=DEMO, **headers):
    return await client.post("/jobs", json=body, headers=headers)


async def test_submit_answers_202_with_the_pending_job_and_its_location(client, redis_client, keys):
    response = await submit(client)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] == "pending" and job["kind"] == "demo" and job["attempt"] == 0
    assert job["params"] == {"steps": 3, "delay_ms": 0, "fail_at_step": None}, "defaults are filled in"
    assert job["max_attempts"] == 3 and job["event_count"] == 1
    assert await redis_client.xlen(keys.queue()) == 1, "the job is queued for a worker"


async def test_same_idempotency_key_returns_the_same_job_with_200(client, redis_client, keys):
    first = await submit(client, **{"Idempotency-Key": "order-42"})
    again = await submit(client, **{"Idempotency-Key": "order-42"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert (await client.get("/jobs")).json()["jobs"] == [again.json()]


async def test_idempotency_key_reused_with_another_body_is_a_conflict(client):
    await submit(client, **{"Idempotency-Key": "k"})
    response = await submit(client, {"kind": "demo", "params": {"steps": 4}}, **{"Idempotency-Key": "k"})
    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_conflict"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"kind": "nope", "params": {}}, "unknown job kind 'nope'; known kinds: demo"),
        ({"kind": "demo", "params": {"steps": 0}}, "steps"),
        ({"kind": "demo", "params": {"steps": 5, "colour": "red"}}, "colour"),
        ({"kind": "demo", "params": {"delay_ms": "slow"}}, "delay_ms"),
        ({"kind": "demo", "params": {}, "max_attempts": 0}, "max_attempts must be between 1 and 20"),
    ],
)
async def test_unknown_kind_or_rejected_params_is_422_with_the_reason(client, redis_client, keys, body, fragment):
    response = await submit(client, body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_params"
    assert fragment in response.json()["detail"]
    assert await redis_client.zcard(keys.index()) == 0, "nothing was created"


@pytest.mark.parametrize("body", [{"params": {}}, {"kind": 5}, {"kind": "demo", "extra": 1}, []])
async def test_malformed_submission_body_is_400(client, body):
    response = await submit(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_body_over_the_limit_is_413(client, redis_client, keys):
    response = await submit(client, {"kind": "demo", "params": {"pad": "x" * 70_000}})
    assert response.status_code == 413
    assert await redis_client.zcard(keys.index()) == 0


async def test_status_sends_an_etag_and_answers_if_none_match_with_304(client, events):
    job = (await submit(client)).json()
    first = await client.get(f"/jobs/{job['id']}")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag == f'"{job["last_event_id"]}"'
    assert (await client.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})).status_code == 304
    await events.append(job["id"], EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    changed = await client.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["state"] == "running"
    assert changed.headers["etag"] != etag


async def test_status_reads_the_first_if_none_match_with_its_list_and_wildcard(client):
    job = (await submit(client)).json()
    path = f"/jobs/{job['id']}"
    etag = (await client.get(path)).headers["etag"]
    assert (await client.get(path, headers={"If-None-Match": f'"other", W/{etag}'})).status_code == 304
    assert (await client.get(path, headers={"If-None-Match": "*"})).status_code == 304
    assert (await client.get(path, headers={"If-None-Match": ""})).status_code == 200
    # Two headers: the first is the one read, as Litestar's Headers gives it.
    twice = [("If-None-Match", '"other"'), ("If-None-Match", etag)]
    assert (await client.get(path, headers=twice)).status_code == 200


async def test_openapi_documents_the_status_routes_parameters_in_order(client):
    schema = (await client.get("/schema/openapi.json")).json()
    params = schema["paths"]["/jobs/{job_id}"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in params] == [
        ("job_id", "path"), ("If-None-Match", "header"), ("download_token", "query"),
    ]
    assert params[1]["required"] is False


async def test_status_has_every_documented_field(client):
    job = (await submit(client)).json()
    body = (await client.get(f"/jobs/{job['id']}")).json()
    assert set(body) == {
        "id", "kind", "state", "progress", "phase", "message", "attempt", "max_attempts", "cancel_requested",
        "created_at", "started_at", "finished_at", "updated_at", "last_event_id", "event_count", "result",
        "error", "params", "artifact", "tenant", "expires_at",
    }
    assert datetime.fromisoformat(body["created_at"]).utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "path", ["/jobs/unknown", "/jobs/bad%7Bid%7D", "/jobs/unknown/history", "/jobs/unknown/events"]
)
async def test_unknown_job_is_404_with_a_json_error(client, path):
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "job_not_found"


async def test_list_is_newest_first_and_pages_with_an_opaque_cursor(client):
    ids = [(await submit(client)).json()["id"] for _ in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/jobs", params=params)).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_list_filters_by_state_and_kind(client):
    keep = (await submit(client)).json()["id"]
    gone = (await submit(client)).json()["id"]
    assert (await client.post(f"/jobs/{gone}/cancel")).status_code == 202
    pending = (await client.get("/jobs", params={"state": "pending"})).json()["jobs"]
    cancelled = (await client.get("/jobs", params={"state": "cancelled", "kind": "demo"})).json()["jobs"]
    assert [j["id"] for j in pending] == [keep] and [j["id"] for j in cancelled] == [gone]
    assert (await client.get("/jobs", params={"kind": "other"})).json() == {"jobs": [], "next": None}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"cursor": "!!"}, {"state": "sleeping"}])
async def test_bad_list_parameters_are_400(client, params):
    response = await client.get("/jobs", params=params)
    assert response.status_code == 400


async def test_list_drops_index_entries_of_jobs_that_no_longer_exist(client, redis_client, keys):
    job = (await submit(client)).json()
    await redis_client.delete(*keys.job_keys(job["id"]))
    assert (await client.get("/jobs")).json()["jobs"] == []
    assert await redis_client.zcard(keys.index()) == 0


async def test_history_pages_oldest_first_with_a_next_cursor(client, events):
    job_id = (await submit(client)).json()["id"]
    await events.append(job_id, EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    for i in range(1, 5):
        await events.append(job_id, EventType.PROGRESS, {"progress": i / 4})
    first = (await client.get(f"/jobs/{job_id}/history", params={"limit": 4})).json()
    assert [e["type"] for e in first["events"]] == ["submitted", "started", "progress", "progress"]
    rest = (await client.get(f"/jobs/{job_id}/history", params={"after": first["next"], "limit": 4})).json()
    assert [e["data"]["progress"] for e in rest["events"]] == [0.75, 1.0] and rest["next"] is None
    event = first["events"][1]
    assert set(event) == {"id", "type", "at", "attempt", "data"} and event["attempt"] == 1
    assert event["at"].endswith("Z") and datetime.fromisoformat(event["at"])


@pytest.mark.parametrize("after", ["abc", "1-2-3", "-1", "99999999999999999999999-0"])
async def test_history_with_a_malformed_cursor_is_400(client, after):
    job_id = (await submit(client)).json()["id"]
    response = await client.get(f"/jobs/{job_id}/history", params={"after": after})
    assert response.status_code == 400 and "event id" in response.json()["detail"]


async def test_cancel_of_a_pending_job_cancels_it_at_once(client):
    job_id = (await submit(client)).json()["id"]
    response = await client.post(f"/jobs/{job_id}/cancel", json={"reason": "not needed"})
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled" and response.json()["finished_at"]
    history = (await client.get(f"/jobs/{job_id}/history")).json()["events"]
    assert history[-1]["type"] == "cancelled" and history[-1]["data"] == {"reason": "not needed"}


async def test_cancel_of_a_running_job_requests_it(client, events):
    job_id = (await submit(client)).json()["id"]
    await events.append(job_id, EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] == "running" and response.json()["cancel_requested"] is True


async def test_cancel_of_a_finished_job_is_409(client):
    job_id = (await submit(client)).json()["id"]
    await client.post(f"/jobs/{job_id}/cancel")
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 409 and response.json()["error"] == "transition_refused"


async def test_delete_removes_every_key_of_the_job_and_its_index_entry(client, redis_client, keys):
    job_id = (await submit(client)).json()["id"]
    assert (await client.delete(f"/jobs/{job_id}")).status_code == 204
    assert await redis_client.exists(*keys.job_keys(job_id)) == 0
    assert await redis_client.zscore(keys.index(), job_id) is None
    assert (await client.get(f"/jobs/{job_id}")).status_code == 404
    assert (await client.delete(f"/jobs/{job_id}")).status_code == 404


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_openapi_documents_every_endpoint_with_its_statuses(client):
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/jobs"]["post"]["responses"]) >= {"200", "202", "400", "409", "413", "422", "503"}
    assert set(paths["/jobs/{job_id}"]["get"]["responses"]) >= {"200", "304", "404", "503"}
    assert "text/event-stream" in paths["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert set(paths["/jobs/{job_id}/cancel"]["post"]["responses"]) >= {"202", "404", "409"}
    assert set(paths["/jobs/{job_id}"]["delete"]["responses"]) >= {"204", "404"}
    assert "SubmitRequest" in str(paths["/jobs"]["post"]["requestBody"])


async def test_a_bad_query_parameter_is_named_as_the_caller_spelled_it(client):
    response = await client.get("/jobs", params={"state": "bogus"})
    assert response.status_code == 400
    assert [(e["key"], e["source"]) for e in response.json()["extra"]] == [("state", "query")]

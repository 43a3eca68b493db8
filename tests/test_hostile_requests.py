"""Hostile and odd requests get the documented error (status, code, a message that says what to fix).

Deep JSON, lone surrogates, coerced types, bodies that are not JSON, malformed job ids,
thousands of query parameters: against the API on a real port and real Redis, and
for what only the HTTP protocol sees, against `jobtrail serve` itself.
"""

from __future__ import annotations

import asyncio
import socket
import time

import msgspec
import pytest

from jobtrail.api.bounds import MAX_QUERY_PARAMS
from jobtrail.artifacts import ArtifactStore
from jobtrail.errors import InvalidParams
from jobtrail.index import JobIndex
from jobtrail.jsondepth import MAX_JSON_DEPTH
from jobtrail.service import JobService
from tests.support.serve import serve, wait_ready

DEMO = {"kind": "demo", "params": {}}
JSON = {"content-type": "application/json"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def submit_raw(client, body: bytes, headers=JSON):
    return await client.post("/jobs", content=body, headers=headers)


def assert_error(response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    for fragment in fragments:
        assert fragment in body["detail"], body


async def test_json_nested_past_the_limit_is_a_400_naming_the_limit_on_every_json_route(client, redis_client, keys):
    job_id = (await client.post("/jobs", json=DEMO)).json()["id"]
    deep = b'{"kind":"demo","params":{"a":' + nested(1000) + b"}}"
    for path in ("/jobs", f"/jobs/{job_id}/cancel", f"/jobs/{job_id}/tokens", "/events/tokens"):
        response = await client.post(path, content=deep, headers=JSON)
        assert_error(response, 400, "invalid_request", f"at most {MAX_JSON_DEPTH}")
    # Just past the limit is refused too; the limit itself is not (the kind then judges the params).
    past = b'{"kind":"demo","params":{"a":' + nested(MAX_JSON_DEPTH - 1) + b"}}"
    assert_error(await submit_raw(client, past), 400, "invalid_request", f"{MAX_JSON_DEPTH + 1} levels")
    at = b'{"kind":"demo","params":{"a":' + nested(MAX_JSON_DEPTH - 2) + b"}}"
    assert_error(await submit_raw(client, at), 422, "invalid_params", "a")
    assert await redis_client.zcard(keys.index()) == 1, "only the first job was created"
    assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "pending", "nothing else was written"


async def test_params_nested_past_the_limit_are_refused_by_the_service_too(events, settings, keys):
    service = JobService(events, JobIndex(events.redis, keys), lambda _: asyncio.sleep(0), settings,
                         ArtifactStore(settings.artifact_dir))
    params = {"a": msgspec.json.decode(nested(MAX_JSON_DEPTH))}
    with pytest.raises(InvalidParams, match=f"at most {MAX_JSON_DEPTH}"):
        await service.submit("demo", params, None)


async def test_a_lone_surrogate_is_a_400_that_says_so(client, redis_client, keys):
    for body in (rb'{"kind":"demo","params":{"\ud800":1}}', rb'{"kind":"demo\udbff","params":{}}',
                 rb'{"kind":"demo","params":{"x":"\udc00"}}'):
        response = await submit_raw(client, body)
        assert_error(response, 400, "invalid_request", "malformed JSON")
        assert "truncated" not in response.json()["detail"]
        assert "surrogate" in response.json()["detail"]
    # An escaped backslash before `ud800` is no escape: that is a valid string.
    assert (await submit_raw(client, rb'{"kind":"demo","params":{},"x":"\\ud800"}')).status_code == 400
    assert await redis_client.zcard(keys.index()) == 0


async def test_body_fields_are_typed_strictly(client, redis_client, keys):
    for attempts in ("3", 3.0, True):
        response = await client.post("/jobs", json={**DEMO, "max_attempts": attempts})
        assert_error(response, 400, "invalid_request")
        assert response.json()["extra"] == [{"message": response.json()["extra"][0]["message"],
                                             "key": "max_attempts", "source": "body"}]
        assert "Expected `int | null`" in response.json()["extra"][0]["message"]
    assert await redis_client.zcard(keys.index()) == 0
    job_id = (await client.post("/jobs", json={**DEMO, "max_attempts": 3})).json()["id"]
    response = await client.post(f"/jobs/{job_id}/tokens", json={"ttl_s": "60"})
    assert_error(response, 400, "invalid_request")
    assert response.json()["extra"][0]["key"] == "ttl_s"


async def test_a_submission_without_a_body_says_one_is_required(client):
    response = await client.post("/jobs", headers=JSON)
    assert_error(response, 400, "invalid_request")
    assert response.json()["extra"][0]["message"] == "a JSON body is required"


async def test_json_routes_take_application_json_only(client, redis_client, keys):
    body = msgspec.json.encode(DEMO)
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
        response = await submit_raw(client, body, headers)
        assert_error(response, 415, "unsupported_media_type", "application/json")
    assert await redis_client.zcard(keys.index()) == 0
    created = await submit_raw(client, body, {"content-type": "application/json; charset=utf-8"})
    assert created.status_code == 202
    job_id = created.json()["id"]
    refused = await client.post(
        f"/jobs/{job_id}/cancel", content=b'{"reason":"x"}', headers={"content-type": "text/plain"}
    )
    assert_error(refused, 415, "unsupported_media_type")
    assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 202, "no body needs no content type"


async def test_415_is_in_the_openapi_document_of_every_route_with_a_body(client):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    for path in ("/jobs", "/jobs/{job_id}/cancel", "/jobs/{job_id}/tokens", "/events/tokens"):
        assert "415" in paths[path]["post"]["responses"], path


@pytest.mark.parametrize("job_id", ["a" * 129, "a" * 1000, "-starts-with-a-dash", "has%20space", "x%00y"])
async def test_any_malformed_job_id_is_a_404_like_a_missing_job(client, job_id):
    for method, path in [("GET", "/jobs/{}"), ("GET", "/jobs/{}/history"), ("GET", "/jobs/{}/events"),
                         ("GET", "/jobs/{}/audit.pdf"), ("GET", "/jobs/{}/artifact"), ("POST", "/jobs/{}/cancel"),
                         ("POST", "/jobs/{}/tokens"), ("DELETE", "/jobs/{}")]:
        response = await client.request(method, path.format(job_id))
        assert_error(response, 404, "job_not_found")


async def test_too_many_query_parameters_is_a_400_in_the_json_shape(client):
    allowed = "&".join(f"p{i}=1" for i in range(MAX_QUERY_PARAMS))
    assert (await client.get(f"/jobs?{allowed}")).status_code == 200
    many = "&".join(["a=1"] * 10_000)  # one URL under httpx's length limit
    response = await client.get(f"/jobs?{many}")
    assert_error(response, 400, "invalid_request", f"at most {MAX_QUERY_PARAMS}")
    assert response.headers["x-request-id"]


def send_slowly(port: int, request: bytes) -> bytes:
    """Send `request` in small pieces, as a real network delivers a long one, and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            for start in range(0, len(request), 4096):
                sock.sendall(request[start:start + 4096])
                time.sleep(0.005)
        except OSError:
            pass  # the server answered and closed before the whole request was sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.e2e
@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_serve_answers_a_request_it_cannot_parse_in_the_json_error_shape(settings, tmp_path, parser):
    process, url = serve(settings, tmp_path, JOBTRAIL_AUTH="off", JOBTRAIL_HTTP=parser)
    try:
        await wait_ready(process, url)
        port = int(url.rsplit(":", 1)[1])
        query = "&".join(f"p{i}=v" for i in range(10_000))
        headers = "".join(f"X-{i}: v\r\n" for i in range(3_000))
        for request in (f"GET /jobs?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), b"NOT HTTP AT ALL\r\n\r\n",
                        # Many headers, and one endless header: the head's bound holds for both.
                        f"GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode(),
                        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 40_000 + b"\r\n\r\n"):
            answer = await asyncio.to_thread(send_slowly, port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), answer[:300]
            assert b"content-type: application/json" in head.lower()
            error = msgspec.json.decode(body)
            assert error["error"] == "invalid_request" and "16384 bytes" in error["detail"]
        # A body is no part of the head, however long: this one reaches the app, which judges its params.
        body = msgspec.json.encode({"kind": "demo", "params": {"x": "a" * 40_000}})
        submit = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        submit += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        answer = await asyncio.to_thread(send_slowly, port, submit)
        assert answer.startswith(b"HTTP/1.1 422"), answer[:300]
    finally:
        process.terminate()
        process.wait(15)


async def test_bodies_built_to_slow_the_checks_down_are_answered_at_once(client):
    # Quadratic scans would take minutes over these; the margin is for a busy machine.
    for body in (b'"' + b'\\"' * 30_000, b'["' + b"\\\\" * 30_000, b"[" * 30_000 + b"]" * 30_000):
        started = time.monotonic()
        response = await submit_raw(client, body)
        assert response.status_code == 400, response.text
        assert time.monotonic() - started < 5

"""API keys, tenants and read-only tokens, over HTTP against real Redis."""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from jobtrail.api.app import create_app
from jobtrail.auth import ApiKeys, ConfigError, Principal, hash_key, new_key
from jobtrail.events import EventType, StartedData, SucceededData
from jobtrail.tokens import TokenSigner
from tests.support.sse import open_stream

ACME, GLOBEX, ADMIN = new_key(), new_key(), new_key()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def feed_job_ids(http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> list[str]:
    """Job ids of the feed's messages until it goes quiet (the feed never closes by itself)."""
    found = []
    async with open_stream(http, path, headers=headers) as stream:
        try:
            while (message := await stream.next_event(timeout=0.5)) is not None:
                found.append(message.json["job_id"])
        except TimeoutError:
            return found
    return found


@pytest.fixture
def secured(settings):
    return msgspec.structs.replace(
        settings, auth="auto", api_keys=f"acme:{hash_key(ACME)}, globex:{hash_key(GLOBEX)}, *:{hash_key(ADMIN)}"
    )


@pytest.fixture
async def url(start_api, secured):
    return (await start_api(secured)).url


@pytest.fixture
async def http(url):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def submit(http, key, **body):
    response = await http.post("/jobs", json={"kind": "demo", "params": {}, **body}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()


# --- starting up ---


def test_with_redis_and_no_keys_the_service_refuses_to_start(settings):
    with pytest.raises(ConfigError, match="JOBTRAIL_AUTH=off"):
        create_app(msgspec.structs.replace(settings, auth="auto"))
    create_app(msgspec.structs.replace(settings, auth="off"))  # said explicitly: it starts


def test_embedded_mode_may_run_open_but_not_when_auth_is_on(settings):
    embedded = msgspec.structs.replace(settings, redis_url=None, auth="auto")
    create_app(embedded)
    with pytest.raises(ConfigError):
        create_app(msgspec.structs.replace(embedded, auth="on"))


def test_a_malformed_key_entry_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError) as refused:
        ApiKeys.parse("acme:my-plain-secret-key", "JOBTRAIL_API_KEYS")
    assert "my-plain-secret-key" not in str(refused.value)
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# our tenants\nacme:{hash_key(ACME)}\n\n*:{hash_key(ADMIN)}  # ops\n")
    assert ApiKeys.parse(keys_file.read_text(), str(keys_file)) == [("acme", hash_key(ACME)), ("*", hash_key(ADMIN))]


def test_keys_resolve_to_their_tenant_and_the_admin():
    keys = ApiKeys([("acme", hash_key(ACME)), ("*", hash_key(ADMIN))])
    assert keys.principal(ACME) == Principal(tenant="acme")
    assert keys.principal(ADMIN) == Principal(tenant=None, admin=True)
    assert keys.principal(GLOBEX) is None
    assert keys.principal("") is None


# --- keys ---


async def test_requests_without_a_valid_key_answer_401(http):
    for headers in ({}, bearer("jt_wrong"), {"Authorization": f"Basic {ACME}"}):
        response = await http.get("/jobs", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "not_authenticated"
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/schema/openapi.json")).status_code == 200


async def test_another_tenants_job_is_404_exactly_like_a_missing_one_everywhere(http, events):
    job = await submit(http, ACME)
    await events.append(job["id"], EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append(job["id"], EventType.SUCCEEDED, SucceededData(result=1), attempt=1)
    requests = [
        ("GET", "/jobs/{}", None),
        ("GET", "/jobs/{}/history", None),
        ("GET", "/jobs/{}/events", None),
        ("GET", "/jobs/{}/artifact", None),
        ("GET", "/jobs/{}/audit.pdf", None),
        ("POST", "/jobs/{}/cancel", None),
        ("POST", "/jobs/{}/tokens", None),
        ("DELETE", "/jobs/{}", None),
    ]
    for method, path, body in requests:
        theirs = await http.request(method, path.format(job["id"]), json=body, headers=bearer(GLOBEX))
        missing = await http.request(method, path.format("0" * 32), json=body, headers=bearer(GLOBEX))
        assert theirs.status_code == missing.status_code == 404, (method, path)
        assert theirs.json()["error"] == missing.json()["error"]
        assert theirs.json()["detail"].replace(job["id"], "ID") == missing.json()["detail"].replace("0" * 32, "ID")
    ndjson = await http.get(f"/jobs/{job['id']}/history", headers={**bearer(GLOBEX), "Accept": "application/x-ndjson"})
    assert ndjson.status_code == 404
    # Nothing was changed by the other tenant's attempts, and the owner still sees it all.
    assert (await http.get(f"/jobs/{job['id']}", headers=bearer(ACME))).json()["state"] == "succeeded"
    assert (await http.get(f"/jobs/{job['id']}/audit.pdf", headers=bearer(ACME))).status_code == 200


async def test_listing_shows_a_tenant_its_own_jobs_and_an_admin_every_job(http):
    mine = {(await submit(http, ACME))["id"] for _ in range(3)}
    theirs = {(await submit(http, GLOBEX))["id"]}
    listed = lambda key: http.get("/jobs", params={"limit": 2}, headers=bearer(key))  # noqa: E731

    async def every(key):
        ids, cursor = set(), None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/jobs", params=params, headers=bearer(key))).json()
            ids |= {job["id"] for job in page["jobs"]}
            if not (cursor := page["next"]):
                return ids

    assert await every(ACME) == mine
    assert await every(GLOBEX) == theirs
    assert await every(ADMIN) == mine | theirs
    assert (await listed(ACME)).json()["jobs"][0]["tenant"] == "acme"


async def test_an_admin_lists_one_tenants_jobs_and_a_tenant_key_only_its_own(http):
    mine = {(await submit(http, ACME))["id"] for _ in range(2)}
    theirs = {(await submit(http, GLOBEX))["id"]}
    await submit(http, ADMIN)  # a job of no tenant: in no tenant's listing

    async def listed(key, tenant):
        response = await http.get("/jobs", params={"tenant": tenant}, headers=bearer(key))
        return response.status_code, {job["id"] for job in response.json().get("jobs", [])}

    assert await listed(ADMIN, "acme") == (200, mine)
    assert await listed(ADMIN, "globex") == (200, theirs)
    assert await listed(ADMIN, "nobody") == (200, set())
    assert await listed(ACME, "acme") == (200, mine), "a tenant may name itself"
    refused = await http.get("/jobs", params={"tenant": "globex"}, headers=bearer(ACME))
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert "only an admin key" in refused.json()["detail"]
    assert (await http.get("/jobs", params={"tenant": ""}, headers=bearer(ADMIN))).status_code == 400


async def test_an_admin_reaches_every_tenants_job(http):
    job = await submit(http, ACME)
    assert (await http.get(f"/jobs/{job['id']}", headers=bearer(ADMIN))).status_code == 200
    assert (await http.post(f"/jobs/{job['id']}/cancel", headers=bearer(ADMIN))).status_code == 202


async def test_one_idempotency_key_used_by_two_tenants_makes_two_jobs(http):
    headers = {"Idempotency-Key": "report-2026-11"}
    first = await http.post("/jobs", json={"kind": "demo"}, headers={**bearer(ACME), **headers})
    second = await http.post(
        "/jobs", json={"kind": "demo", "params": {"steps": 2}}, headers={**bearer(GLOBEX), **headers}
    )
    assert first.status_code == second.status_code == 202  # no 409: globex cannot see acme's key
    assert first.json()["id"] != second.json()["id"]


async def test_the_activity_feed_holds_the_tenants_own_transitions(http):
    mine, theirs = await submit(http, ACME), await submit(http, GLOBEX)

    assert await feed_job_ids(http, "/events?after=0-0", bearer(ACME)) == [mine["id"]]
    assert await feed_job_ids(http, "/events?after=0-0", bearer(GLOBEX)) == [theirs["id"]]
    assert set(await feed_job_ids(http, "/events?after=0-0", bearer(ADMIN))) == {mine["id"], theirs["id"]}


# --- read-only tokens ---


async def test_a_job_token_opens_its_events_history_and_artifact_only(http, events):
    job = await submit(http, ACME)
    issued = await http.post(f"/jobs/{job['id']}/tokens", json={"ttl_s": 60}, headers=bearer(ACME))
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert issued.json()["events_url"] == f"/jobs/{job['id']}/events?token={token}"
    await events.append(job["id"], EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append(job["id"], EventType.SUCCEEDED, SucceededData(result=1), attempt=1)

    history = await http.get(f"/jobs/{job['id']}/history", params={"token": token})
    assert history.status_code == 200 and len(history.json()["events"]) == 3
    async with open_stream(http, f"/jobs/{job['id']}/events?token={token}") as stream:
        assert [message.event for message in await stream.rest()][-1] == "succeeded"
    assert (await http.get(f"/jobs/{job['id']}/artifact", params={"token": token})).status_code == 404  # none made

    # Anywhere else, and for anything but reading, the token is no key.
    for method, path in [("GET", "/jobs/{}"), ("GET", "/jobs"), ("POST", "/jobs/{}/cancel"), ("DELETE", "/jobs/{}"),
                         ("POST", "/jobs/{}/tokens"), ("GET", "/events")]:
        response = await http.request(method, path.format(job["id"]), params={"token": token})
        assert response.status_code == 401, (method, path)


async def test_expired_forged_and_other_job_tokens_answer_401(http, events, secured):
    job, other = await submit(http, ACME), await submit(http, ACME)
    signer = TokenSigner(events.redis, events.keys, secured.token_secret)
    expired, _ = await signer.issue(Principal(tenant="acme"), job["id"], ttl_s=-1)
    good = (await http.post(f"/jobs/{job['id']}/tokens", headers=bearer(ACME))).json()["token"]
    body, signature = good.split(".")
    forged_claims = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    cases = {
        "expired": (job["id"], expired),
        "forged claims": (job["id"], f"{forged_claims}.{signature}"),
        "forged signature": (job["id"], f"{body}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"),
        "garbage": (job["id"], "not-a-token"),
        "other job": (other["id"], good),
    }
    for name, (job_id, token) in cases.items():
        for path in ("history", "events", "artifact"):
            response = await http.get(f"/jobs/{job_id}/{path}", params={"token": token})
            assert response.status_code == 401, (name, path, response.text)


async def test_a_feed_token_opens_the_tenants_feed_and_no_job(http):
    job = await submit(http, ACME)
    await submit(http, GLOBEX)
    token = (await http.post("/events/tokens", headers=bearer(ACME))).json()["token"]
    assert await feed_job_ids(http, f"/events?token={token}&after=0-0") == [job["id"]]
    assert (await http.get(f"/jobs/{job['id']}/history", params={"token": token})).status_code == 401
    job_token = (await http.post(f"/jobs/{job['id']}/tokens", headers=bearer(ACME))).json()["token"]
    assert (await http.get("/events", params={"token": job_token})).status_code == 401


async def test_token_lifetimes_are_bounded(http, secured):
    job = await submit(http, ACME)
    for ttl in (0, secured.token_max_ttl_s + 1):
        response = await http.post(f"/jobs/{job['id']}/tokens", json={"ttl_s": ttl}, headers=bearer(ACME))
        assert response.status_code in (400, 422), ttl  # 0 breaks the schema, too long breaks the bound


async def test_tokens_outlive_the_api_process_that_issued_them(start_api, secured, http):
    job = await submit(http, ACME)
    token = (await http.post(f"/jobs/{job['id']}/tokens", headers=bearer(ACME))).json()["token"]
    other = await start_api(secured)  # no JOBTRAIL_TOKEN_SECRET: the key is shared through Redis
    async with httpx.AsyncClient(base_url=other.url) as second:
        assert (await second.get(f"/jobs/{job['id']}/history", params={"token": token})).status_code == 200


# --- limits ---


async def test_submissions_over_the_per_minute_limit_answer_429_with_retry_after(start_api, secured):
    api = await start_api(msgspec.structs.replace(secured, submissions_per_minute=3))
    async with httpx.AsyncClient(base_url=api.url) as http:
        for _ in range(3):
            await submit(http, ACME)
        refused = await http.post("/jobs", json={"kind": "demo"}, headers=bearer(ACME))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "3 submissions" in refused.json()["detail"]
        await submit(http, GLOBEX)  # the limit is per tenant


async def test_sse_connections_over_the_per_tenant_limit_answer_429(start_api, secured):
    api = await start_api(msgspec.structs.replace(secured, sse_connections_per_tenant=1))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        job = await submit(http, ACME)
        async with open_stream(http, f"/jobs/{job['id']}/events", headers=bearer(ACME)) as first:
            await first.next()
            refused = await http.get("/events", headers=bearer(ACME))
            assert refused.status_code == 429 and refused.headers["retry-after"]
            async with open_stream(http, "/events", headers=bearer(GLOBEX)):
                pass  # the limit is per tenant
        for _ in range(50):  # the slot comes back when the first stream is closed
            async with http.stream("GET", "/events", headers=bearer(ACME)) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the SSE slot was never given back")


async def test_a_reconnect_over_the_stream_limit_gets_a_retry_hint_so_a_browser_keeps_trying(start_api, secured):
    api = await start_api(msgspec.structs.replace(secured, sse_connections_per_tenant=1))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        job = await submit(http, ACME)
        async with open_stream(http, f"/jobs/{job['id']}/events", headers=bearer(ACME)) as first:
            submitted = await first.next_event()
            for path in (f"/jobs/{job['id']}/events", "/events"):
                # EventSource gives up for good on a 429; a reconnect is told to come back instead.
                again = await http.get(path, headers={**bearer(ACME), "Last-Event-ID": submitted.id})
                assert again.status_code == 200, again.text
                assert again.headers["content-type"].startswith("text/event-stream")
                assert again.text == "retry: 5000\n: too many open event streams; reconnect to resume\n\n"
                # A first connect, which no browser retries anyway, still learns the status.
                assert (await http.get(path, headers=bearer(ACME))).status_code == 429


async def fill_feed(redis, keys, tenant: str, count: int) -> None:
    """`count` transitions in `tenant`'s feed (a few MB of SSE to replay), pipelined."""
    fields = {"job_id": "j", "type": "submitted", "state": "pending", "at": 1_800_000_000_000, "event_id": "1-1",
              "attempt": 0, "kind": "demo", "tenant": tenant}
    for _ in range(0, count, 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(2000):
                pipe.xadd(keys.tenant_activity(tenant), fields)
            await pipe.execute()


async def open_and_never_read(url: str, path: str, key: str) -> tuple[socket.socket, bytes]:
    """Send a GET, read its status line, then read nothing more (a tiny receive buffer, so the server blocks)."""
    loop = asyncio.get_running_loop()
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    status = b""
    while not status.endswith(b"\r\n"):
        status += await asyncio.wait_for(loop.sock_recv(sock, 1), 10)
    return sock, status


async def test_streams_whose_clients_never_read_keep_their_slots_past_the_slot_ttl(start_api, secured, events):
    # A short TTL, but renewals (every 1 s) may run 2 s late on a busy machine before a slot lapses.
    limited = msgspec.structs.replace(secured, sse_connections_per_tenant=2, sse_slot_ttl_s=3.0)
    api = await start_api(limited)
    slots = api.services.sse_slots
    await fill_feed(events.redis, events.keys, "acme", 20_000)
    stalled = [await open_and_never_read(api.url, "/events?after=0-0", ACME) for _ in range(2)]
    try:
        assert all(b" 200 " in status for _, status in stalled), stalled
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            for _ in range(3):  # 10.5 s: three and a half TTLs
                await asyncio.sleep(3.5)
                async with http.stream("GET", "/events", headers=bearer(ACME)) as refused:
                    assert refused.status_code == 429, "a stream nobody reads gave its slot up while still open"
            assert len(await events.redis.zrange(events.keys.sse_slots("acme"), 0, -1)) == 2
    finally:
        for sock, _ in stalled:
            sock.close()
    for _ in range(100):  # closing the connections gives the slots back
        if slots.held_count == 0:
            break
        await asyncio.sleep(0.1)
    assert slots.held_count == 0
    assert await events.redis.zcard(events.keys.sse_slots("acme")) == 0


async def test_params_over_the_size_limit_answer_422(start_api, secured):
    api = await start_api(msgspec.structs.replace(secured, max_params_bytes=100))
    async with httpx.AsyncClient(base_url=api.url) as http:
        response = await http.post(
            "/jobs", json={"kind": "demo", "params": {"note": "x" * 200}}, headers=bearer(ACME)
        )
        assert response.status_code == 422
        assert "limit is 100" in response.json()["detail"]


# --- request ids and logs ---


async def test_requests_carry_a_request_id_and_logs_hide_tokens(http, caplog):
    caplog.set_level(logging.INFO)
    job = await submit(http, ACME)
    given = await http.get(f"/jobs/{job['id']}", headers={**bearer(ACME), "X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = await http.get("/jobs/nope", headers=bearer(GLOBEX))
    assert len(made.headers["x-request-id"]) == 32
    hostile = await http.get("/jobs", headers={**bearer(ACME), "X-Request-ID": "x" * 500})
    assert hostile.headers["x-request-id"] != "x" * 500
    denied = await http.get("/jobs", headers={"X-Request-ID": "trace-43"})
    assert denied.status_code == 401 and denied.headers["x-request-id"] == "trace-43"

    token = (await http.post(f"/jobs/{job['id']}/tokens", headers=bearer(ACME))).json()["token"]
    await http.get(f"/jobs/{job['id']}/history", params={"token": token})
    # The service's records only: httpx, the test's client, logs its URLs whole.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "token=[redacted]" in logged
    assert token not in logged and ACME not in logged

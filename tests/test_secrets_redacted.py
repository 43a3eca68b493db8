"""Credentials never reach the log or an error body: redacted by parsed parameter name and by shape.

Against `jobtrail serve` as a process, reading the log it writes.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from jobtrail.api.redaction import redacted_query, redacted_text
from jobtrail.auth import hash_key, new_key
from tests.support.serve import serve, wait_ready

pytestmark = pytest.mark.e2e

KEY = new_key()


def secret() -> str:
    return f"s3cret{uuid.uuid4().hex}"


async def test_secrets_in_urls_are_redacted_in_the_access_log_and_never_echoed(settings, tmp_path):
    process, url = serve(settings, tmp_path, JOBTRAIL_API_KEYS=f"acme:{hash_key(KEY)}")
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        await wait_ready(process, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            job_id = (await http.post("/jobs", json={"kind": "demo", "params": {}}, headers=auth)).json()["id"]
            token = (await http.post(f"/jobs/{job_id}/tokens", headers=auth)).json()["token"]
            mistaken_key = new_key()  # someone's key, sent where no key belongs
            secrets = {name: secret() for name in ("encoded_t", "encoded_e", "bad_limit", "password", "access")}
            targets = [
                f"/jobs/{job_id}/history?%74oken={secrets['encoded_t']}",
                f"/jobs/{job_id}/history?tok%65n={secrets['encoded_e']}",
                f"/jobs/{job_id}/history?token={token}",
                f"/jobs?api_key={mistaken_key}",
                f"/jobs?limit=abc&token={secrets['bad_limit']}",  # a 400 that names the request
                f"/jobs?limit=abc&Password={secrets['password']}&access_token={secrets['access']}",
                f"/jobs?limit=abc&kind={mistaken_key}",  # a key's shape, under any name
                f"/jobs?limit=abc&cursor={token}",  # a token's shape, under any name
                f"/jobs/{job_id}/events?after=jt%5F{mistaken_key[3:]}",  # percent-encoded, echoed in the 400
                f"/jobs/{mistaken_key}",  # in the path, echoed in the 404
            ]
            bodies = []
            response = await http.get("/jobs", headers={**auth, "X-Request-ID": mistaken_key})
            assert response.headers["x-request-id"] != mistaken_key, "a key is no request id"
            for target in targets:
                response = await http.get(target, headers=auth)
                bodies.append(response.text)
                assert response.status_code in (200, 400, 401, 404), (target, response.text)
            assert (await http.get(f"/jobs/{job_id}/history?token={token}")).status_code == 200, "the token works"
    finally:
        process.terminate()
        process.wait(15)
    log = next(tmp_path.glob("serve-*.log")).read_text()

    for value in [*secrets.values(), token, mistaken_key, mistaken_key[3:], KEY]:
        assert value not in log, f"{value} reached the log"
        for body in bodies:
            assert value not in body, f"{value} was echoed in {body}"
    for target in targets:
        assert target.split("?")[0].replace(mistaken_key, "[redacted]") in log, f"{target} was not logged"
    assert log.count("[redacted]") >= len(targets)
    assert "Validation failed for GET /jobs?limit=abc&token=[redacted]" in "\n".join(bodies)


@pytest.mark.parametrize("query", ["token=abc", "%74oken=abc", "TOKEN=abc", "api_key=abc", "x-api-key=abc",
                                   "apikey=abc", "key=abc", "access_token=abc", "client_secret=abc",
                                   "password=abc", "authorization=abc"])
def test_a_secret_names_value_is_redacted_however_its_name_is_spelled(query):
    name = query.split("=")[0]
    assert redacted_query(f"limit=5&{query}&kind=demo") == f"limit=5&{name}=[redacted]&kind=demo"


def test_ordinary_parameters_and_ids_are_left_alone():
    query = "state=failed&kind=export.pdf&limit=50&after=1700000000000-0&cursor=WzE3OTU0NTgxNjI2MTYsIjMxNjRjIl0"
    assert redacted_query(query) == query
    assert redacted_text("job '501f584564894af790d0964a242e0ec3' does not exist") == (
        "job '501f584564894af790d0964a242e0ec3' does not exist"
    )


def test_redaction_takes_linear_time_on_long_runs():
    started = time.monotonic()
    redacted_query("cursor=" + "A" * 60_000 + "&after=" + "jt_" * 20_000)
    redacted_text("/jobs/" + ("a" * 40 + ".") * 1_500)
    assert time.monotonic() - started < 2  # a backtracking pattern takes minutes here

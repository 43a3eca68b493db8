"""Read-only tokens: one spelling only, and checked whenever one is presented, open mode included."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from jobtrail.auth import hash_key, new_key

ACME = new_key()
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


async def submit(http: httpx.AsyncClient, **headers: str) -> str:
    response = await http.post("/jobs", json={"kind": "demo", "params": {}}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def respellings(token: str) -> dict[str, str]:
    """Other spellings of the same bytes (or of bytes Python's lenient decoder reads the same)."""
    body, signature = token.split(".")
    # 32 bytes in 43 characters leave 2 unused bits in the last one: flipping one keeps the bytes.
    last = ALPHABET[ALPHABET.index(signature[-1]) ^ 1]
    spellings = {
        "padded signature": f"{token}=",
        "padded claims": f"{body}{'=' * (-len(body) % 4 or 2)}.{signature}",
        "stray !": f"{body}.{signature[:10]}!{signature[10:]}",
        "stray space": f"{body[:5]} {body[5:]}.{signature}",
        "unused bits set": f"{body}.{signature[:-1]}{last}",
        "a second dot": f"{body}.{signature}.",
        "no signature": body,
    }
    if "-" in token or "_" in token:  # Python's decoder reads `+` and `/` as `-` and `_`
        spellings["standard alphabet"] = token.replace("-", "+").replace("_", "/")
    return spellings


@pytest.fixture
async def secured_http(start_api, settings):
    secured = msgspec.structs.replace(settings, auth="auto", api_keys=f"acme:{hash_key(ACME)}")
    api = await start_api(secured)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        yield http


async def test_a_token_is_accepted_in_its_one_spelling_only(secured_http):
    key = {"Authorization": f"Bearer {ACME}"}
    job_id = await submit(secured_http, **key)
    token = (await secured_http.post(f"/jobs/{job_id}/tokens", headers=key)).json()["token"]
    assert (await secured_http.get(f"/jobs/{job_id}/history", params={"token": token})).status_code == 200

    for name, spelling in respellings(token).items():
        assert spelling != token
        response = await secured_http.get(f"/jobs/{job_id}/history", params={"token": spelling})
        assert response.status_code == 401, (name, spelling, response.text)
        assert response.json()["error"] == "not_authenticated"


async def test_open_mode_checks_a_presented_token_and_keeps_it_to_what_it_covers(client):
    job_id, other_id = await submit(client), await submit(client)
    token = (await client.post(f"/jobs/{job_id}/tokens")).json()["token"]
    body, signature = token.split(".")

    assert (await client.get(f"/jobs/{job_id}/history")).status_code == 200, "open: no token, no check"
    assert (await client.get(f"/jobs/{job_id}/history", params={"token": token})).status_code == 200
    refused = {
        "forged": (job_id, "history", f"{body}.{signature[::-1]}"),
        "garbage": (job_id, "history", "not-a-token"),
        "respelled": (job_id, "history", f"{token}="),
        "another job's": (other_id, "history", token),
        "another job's events": (other_id, "events", token),
        "a job's, on the feed": (None, "feed", token),
        "a job's, on a route without tokens": (job_id, "", token),
    }
    for name, (target, path, presented) in refused.items():
        url = "/events" if path == "feed" else f"/jobs/{target}/{path}".rstrip("/")
        response = await client.get(url, params={"token": presented})
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == "not_authenticated"
    # A percent-encoded name is the same parameter: it is checked too.
    response = await client.get(f"/jobs/{job_id}/history?%74oken=not-a-token")
    assert response.status_code == 401

"""What `Client` and `AsyncClient` share about httpx: building requests, reading replies, failures."""

from __future__ import annotations

from importlib import metadata

import httpx

from jobtrail.client.effects import Call, Reply, StreamDropped
from jobtrail.client.errors import Unavailable
from jobtrail.client.follow import Policy


def _version() -> str:
    try:
        return metadata.version("jobtrail")
    except metadata.PackageNotFoundError:
        return "dev"


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"jobtrail-client/{_version()}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def policy(max_reconnect_delay_s: float, stall_timeout_s: float, give_up_after_s: float | None) -> Policy:
    return Policy(max_delay_s=max_reconnect_delay_s, stall_s=stall_timeout_s, give_up_s=give_up_after_s)


def build(http: httpx.Client | httpx.AsyncClient, call: Call, read_timeout: float | None = None) -> httpx.Request:
    timeout = http.timeout
    if call.timeout is not None or read_timeout is not None:
        timeout = httpx.Timeout(call.timeout or http.timeout.connect, read=read_timeout)
    if call.json is not None or call.has_body:
        return http.build_request(call.method, call.path, params=call.params, headers=call.headers,
                                  json=call.json, timeout=timeout)
    return http.build_request(call.method, call.path, params=call.params, headers=call.headers, timeout=timeout)


def reply(response: httpx.Response, content: bytes = b"") -> Reply:
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, content)


def unreachable(http: httpx.Client | httpx.AsyncClient, exc: Exception) -> Unavailable:
    return Unavailable(None, "unreachable", f"no answer from {http.base_url}: {type(exc).__name__} {exc}".strip())


def dropped(exc: Exception) -> StreamDropped:
    return StreamDropped(None, "stream_dropped", f"the stream broke: {type(exc).__name__} {exc}".strip())


# What a broken connection raises: transport errors, and a stream httpx already closed.
FAILURES = (httpx.TransportError, httpx.StreamError)

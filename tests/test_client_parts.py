"""The client's pieces without a server: the SSE parser, error mapping, and what it imports."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from jobtrail.client.errors import (
    ArtifactNotFound,
    Conflict,
    InvalidParams,
    JobNotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_from,
)
from jobtrail.client.follow import comes_after
from jobtrail.client.models import JobState
from jobtrail.client.sse import Block, SseParser
from tests.support.env import ROOT

STREAM = (
    b"retry: 2000\n\n"
    b": ping\n\n"
    b"id: 1-0\nevent: submitted\ndata: {\"a\":1}\n\n"
    b"event: gap\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"id: 2-0\n: unreadable entry skipped\n\n"
    b"id: 3-0\revent: succeeded\rdata: {}\r\r"
)
BLOCKS = [
    Block(retry_ms=2000),
    Block(event="submitted", data='{"a":1}', id="1-0"),
    Block(event="gap", data="line one\nline two"),
    Block(id="2-0"),
    Block(event="succeeded", data="{}", id="3-0"),
]


def parse(chunks: list[bytes]) -> list[Block]:
    parser = SseParser()
    return [block for chunk in chunks for block in parser.feed(chunk)]


def test_the_parser_reads_every_block_with_any_line_ending():
    assert parse([STREAM]) == BLOCKS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_the_parser_gives_the_same_blocks_however_the_bytes_are_chunked(cuts):
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert parse(chunks) == BLOCKS


def test_ids_compare_as_numbers_not_strings():
    assert comes_after("10-0", "9-5") and comes_after("9-10", "9-9") and not comes_after("9-9", "9-9")
    assert comes_after("1-0", None)


def test_api_error_bodies_become_typed_errors():
    def error(status, code, headers=None):
        return error_from(status, headers or {}, b'{"error": "%s", "detail": "why"}' % code.encode())

    assert type(error(404, "job_not_found")) is JobNotFound
    assert type(error(404, "artifact_not_found")) is ArtifactNotFound
    assert type(error(401, "not_authenticated")) is Unauthorized
    assert type(error(409, "idempotency_conflict")) is Conflict
    assert type(error(422, "invalid_params")) is InvalidParams
    limited = error(429, "rate_limited", {"retry-after": "7"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    down = error(503, "store_unavailable", {"retry-after": "2"})
    assert isinstance(down, Unavailable) and (down.status, down.code, down.detail, down.retry_after) == (
        503, "store_unavailable", "why", 2.0)
    proxy = error_from(502, {}, b"<html>Bad Gateway</html>")
    assert isinstance(proxy, Unavailable) and proxy.code == "http_502" and "Bad Gateway" in proxy.detail


def test_a_newer_servers_extra_fields_and_states_still_decode():
    import msgspec

    body = b'{"id": "j", "state": "paused", "progress": 0.5, "colour": "blue", "shards": [1, 2]}'
    state = msgspec.json.decode(body, type=JobState)
    assert (state.id, state.state, state.progress, state.terminal) == ("j", "paused", 0.5, False)


def test_the_client_imports_neither_the_server_nor_redis_and_jobtrail_stays_cheap():
    package = JobState.__module__.partition(".")[0]  # the import name (`jobtrail` once installed as such)
    probe = (
        f"import sys, {package}; assert 'httpx' not in sys.modules, 'importing the package loads httpx';"
        f"from {package} import Client, AsyncClient, JobNotFound;"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('litestar', 'redis', 'taskiq', 'uvicorn'));"
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

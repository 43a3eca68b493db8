"""The cheap nesting check agrees with the exact depth (app/jsondepth.py)."""

from __future__ import annotations

import pytest

from jobtrail.jsondepth import MAX_JSON_DEPTH, json_depth, nests_deeper_than

DOCUMENTS = [
    b"1",
    b"{}",
    b'{"kind": "demo", "params": {"a": [1, {"b": []}]}}',
    b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,
    b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    b'["' + b"[" * 100 + b'"]',  # brackets in a string count for the quick pass only, never in the answer
    b"[{}]" * 40,  # many brackets, shallow
    b'{"a":' * 40 + b"1" + b"}" * 40,
]


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("limit", [0, 1, 2, MAX_JSON_DEPTH])
def test_nests_deeper_than_says_what_the_exact_depth_says(document, limit):
    assert nests_deeper_than(document, limit) == (json_depth(document) > limit)

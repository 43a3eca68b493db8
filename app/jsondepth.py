"""How deep a JSON document nests, measured on its bytes, without decoding or recursion.

Decoders recurse: msgspec gives up near Python's recursion limit (about 1 000 levels)
with a RecursionError, and a document just under that still costs every later decode
and encode of it (the stream entry, the worker, SSE) that much stack. So jobtrail
bounds nesting explicitly and checks it before anything decodes: request bodies
(app/api/body.py) and a submission's params (app/service.py).
"""

from __future__ import annotations

import re
from itertools import accumulate

# Deeper than any request body or job params need, and far from any decoder's limit.
MAX_JSON_DEPTH = 32

# Brackets inside strings do not nest. The closing quote is optional and the quantifiers
# possessive, so an unterminated string ends the scan instead of being retried from
# every later quote: linear in the body, where `"\"\"\"…` would otherwise be quadratic.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def json_depth(document: bytes) -> int:
    """How many arrays and objects deep `document` nests: 0 for a scalar, 1 for `[1]`, 2 for `{"a": []}`.

    Meant for a check before decoding, so `document` need not be valid JSON; for valid
    JSON the answer is exact.
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", document))
    return max(accumulate(1 if byte in b"[{" else -1 for byte in brackets), default=0)


def nests_deeper_than(document: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `document` nests more than `limit` deep; for most documents without the scan above.

    A document with `limit` opening brackets or fewer in all (strings included) cannot nest
    deeper, and counting them is a pass in C: every submission checks its body and its params.
    """
    if document.count(b"[") + document.count(b"{") <= limit:
        return False
    return json_depth(document) > limit

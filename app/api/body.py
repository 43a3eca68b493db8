"""JSON request bodies, decoded in one place for every route that takes one.

Litestar decodes a body leniently: any content type, nesting until the decoder hits
Python's recursion limit (a 500), and types coerced (`"max_attempts": "3"` read as 3).
`JsonRequest.json` is the one place every JSON route's body passes through, and there
a body must be `application/json` (else 415), nest at most MAX_JSON_DEPTH deep, be
valid JSON with whole characters, and match the route's body type strictly (else 400,
saying what to fix). Litestar then converts it as before.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.types import Empty

from jobtrail.errors import InvalidRequest, UnsupportedMediaType
from jobtrail.jsondepth import MAX_JSON_DEPTH, json_depth, nests_deeper_than

# A high surrogate escape without the low one after it: msgspec reports "Input data
# was truncated" for it, which sends the caller looking for the wrong problem.
_LONE_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_decode = msgspec.json.Decoder().decode


def is_json_media_type(media_type: str) -> bool:
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def decode_json_body(body: bytes, media_type: str) -> Any:
    """The JSON value of a request body; UnsupportedMediaType or InvalidRequest when it is not one."""
    if not is_json_media_type(media_type):
        sent = f"not {media_type!r}" if media_type else "and this request has no Content-Type"
        raise UnsupportedMediaType(f"the body must be JSON sent as `Content-Type: application/json`, {sent}")
    if nests_deeper_than(body):
        depth = json_depth(body)
        raise InvalidRequest(f"the JSON body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        if _LONE_SURROGATE.search(body):
            raise InvalidRequest(
                "malformed JSON: a string holds half a UTF-16 surrogate pair (a `\\ud800`-`\\udbff` escape "
                "not followed by a `\\udc00`-`\\udfff` one); send whole characters"
            ) from None
        raise InvalidRequest(f"malformed JSON: {exc}") from None


class JsonRequest(Request):
    """Litestar's Request with the JSON body rules above (the app's `request_class`)."""

    async def json(self) -> Any:
        if self._json is Empty:
            value = decode_json_body(await self.body(), self.content_type[0])
            self._check_type(value)
            self._json = value
        return self._json

    def _check_type(self, value: Any) -> None:
        """ValidationException (400, naming the field) unless `value` is the route's body type without coercion."""
        field = self.route_handler.parsed_fn_signature.parameters.get("data")
        if field is None:
            return
        try:
            msgspec.convert(value, type=field.annotation, strict=True)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `$")
            key = path.rstrip("`").lstrip(".") or "data"
            raise ValidationException(
                detail=f"Validation failed for {self.method} {self.url.path}",
                extra=[{"message": message, "key": key, "source": "body"}],
            ) from None

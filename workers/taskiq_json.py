"""A taskiq task's arguments and return value as event data: JSON where they encode, else a note.

A user's task takes and returns whatever its serializer carries (pickle can carry
anything), and jobtrail stores params and results as JSON in the job's stream and hash.
So a value that does not encode, or that would take more than its bound, is replaced by
`{"note": "..."}` saying why; the task itself gets and returns its values untouched.
Pydantic models (which taskiq itself accepts as arguments) encode as their JSON dump.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel
from taskiq import TaskiqMessage

# A result is a summary for people and dashboards; the user's result backend keeps the
# value itself. Arguments are bounded by JOBTRAIL_MAX_PARAMS_BYTES, like a submission's.
MAX_RESULT_BYTES = 64 * 1024
_NOTE_CHARS = 300


def _enc_hook(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} has no JSON form")


_encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode


def as_json(value: Any, what: str, limit: int) -> Any:
    """`value` as plain JSON values, or a note when it does not encode within `limit` bytes."""
    try:
        raw = _encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:_NOTE_CHARS]
        return {"note": f"{what} did not encode as JSON ({reason})"}
    if len(raw) > limit:
        return {"note": f"{what} took {len(raw)} bytes as JSON, over the limit of {limit}"}
    return msgspec.json.decode(raw)


def params_of(message: TaskiqMessage, limit: int) -> dict[str, Any]:
    """The task's arguments as a job's params: `{"args": [...], "kwargs": {...}}`, or a note."""
    params = as_json({"args": message.args, "kwargs": message.kwargs}, "the arguments", limit)
    assert isinstance(params, dict)  # either the object above or a note
    return params


def result_of(value: Any) -> Any:
    """The task's return value as a job's result, or a note."""
    return as_json(value, "the return value", MAX_RESULT_BYTES)

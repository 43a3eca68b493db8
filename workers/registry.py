"""The registry of job kinds: name -> params Struct and handler.

The API validates submissions against it (422 at submit time, not a worker failure);
the runner looks handlers up in it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from app.errors import InvalidParams

if TYPE_CHECKING:
    from workers.context import JobContext

Handler = Callable[[Any, "JobContext"], Awaitable[Any]]


class Kind(NamedTuple):
    name: str
    params: type[msgspec.Struct]
    handler: Handler


_KINDS: dict[str, Kind] = {}


def kind(name: str, params: type[msgspec.Struct]) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of job kind `name`.

    `params` is a Struct; a `__post_init__` that raises ValueError rejects a
    submission with that message.
    """

    def register(handler: Handler) -> Handler:
        if name in _KINDS:
            raise ValueError(f"job kind {name!r} is registered twice")
        _KINDS[name] = Kind(name, params, handler)
        return handler

    return register


def kinds() -> dict[str, Kind]:
    _load_builtin_kinds()
    return dict(_KINDS)


def get_kind(name: str) -> Kind:
    """The kind called `name`; InvalidParams naming the known kinds if there is none."""
    found = kinds().get(name)
    if found is None:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise InvalidParams(f"unknown job kind {name!r}; known kinds: {known}")
    return found


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` checked against the kind's Struct, with defaults filled in."""
    spec = get_kind(name)
    try:
        return msgspec.to_builtins(msgspec.convert(params, spec.params))
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"invalid params for kind {name!r}: {exc}") from None


def parse_params(name: str, params: dict[str, Any]) -> Any:
    """The stored params of a job as its kind's Struct, for the handler."""
    return msgspec.convert(params, get_kind(name).params)


def _load_builtin_kinds() -> None:
    import workers.kinds  # noqa: F401  (importing registers every built-in kind)

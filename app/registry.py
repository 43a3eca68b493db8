"""The registry of job kinds: name -> params Struct, handler and (optionally) phases.

Part of the core: it imports nothing above it, and knows no kind itself. Kinds register
by being imported (`@kind(...)` runs at import time); which modules are imported at
start, the built-in kinds' included, is the business of the one loader that the API
and the workers share (workers/kinds_loader.py). The API validates submissions against
the registry (422 at submit time, not a worker failure); the runner looks handlers up
in it, and fails a job whose kind it does not know (UnknownKind) instead of retrying it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from jobtrail.errors import InvalidParams, UnknownKind

# `async def handler(params, ctx)`. The context is the worker's JobContext
# (jobtrail.workers.context): the core does not import the layer above it, not even for a type.
Handler = Callable[[Any, Any], Awaitable[Any]]

# What SubmitRequest accepts (1..100 characters), without spaces or control characters:
# a kind nobody can submit, or one a typo made, is refused where it is declared.
KIND_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


class DuplicateKind(ValueError):
    """A kind name registered a second time with another handler, params or phases."""


class Kind(NamedTuple):
    name: str
    params: type[msgspec.Struct]
    handler: Handler
    # None: any phase goes; otherwise the only phases a handler may enter (JobContext checks).
    phases: tuple[str, ...] | None = None

    @property
    def description(self) -> str | None:
        """The handler's docstring, for `GET /kinds`."""
        return inspect.getdoc(self.handler) or None


_KINDS: dict[str, Kind] = {}


def kind(
    name: str, params: type[msgspec.Struct], *, phases: Iterable[str] | None = None
) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of job kind `name`.

    `params` is a Struct: a submission whose params do not convert to it is a 422, and
    a `__post_init__` that raises ValueError rejects it with that message. The handler
    is `async def handler(params, ctx: JobContext)`. With `phases`, `ctx.phase()` and
    `ctx.progress(phase=...)` accept those names only (UnknownPhase otherwise).
    Registering a name again with the same handler, params and phases changes nothing;
    with anything else it raises DuplicateKind. Mistakes in the declaration raise
    TypeError or ValueError at import, so the loader stops the process at start.
    """
    if not isinstance(name, str) or not KIND_NAME_RE.fullmatch(name):
        raise ValueError(
            f"job kind name {name!r}: use 1-100 letters, digits and `_.:-`, starting with a letter or digit"
        )
    if not (isinstance(params, type) and issubclass(params, msgspec.Struct)):
        raise TypeError(f"job kind {name!r}: params must be a msgspec.Struct class, got {params!r}")
    try:
        msgspec.json.schema(params)  # GET /kinds serves it; a type without one fails here, not there
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job kind {name!r}: params {params.__name__} have no JSON Schema: {exc}") from None
    declared = _phases(name, phases)

    def register(handler: Handler) -> Handler:
        # An object with an async __call__ will do: whether that method is a coroutine
        # function is the question, which callable() cannot answer.
        call = getattr(handler, "__call__", None)  # noqa: B004
        if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
            raise TypeError(f"job kind {name!r}: the handler {_where(handler)} must be an `async def`")
        new = Kind(name, params, handler, declared)
        existing = _KINDS.get(name)
        if existing is not None and existing != new:
            raise DuplicateKind(
                f"job kind {name!r} is registered twice: by {_where(existing.handler)} and by {_where(handler)}"
            )
        _KINDS[name] = new
        return handler

    return register


def kinds() -> dict[str, Kind]:
    """Every registered kind by name (a copy)."""
    return dict(_KINDS)


def find_kind(name: str) -> Kind | None:
    return _KINDS.get(name)


def get_kind(name: str) -> Kind:
    """The kind called `name`; UnknownKind (an InvalidParams) naming the known kinds if there is none."""
    found = _KINDS.get(name)
    if found is None:
        raise UnknownKind(name, sorted(_KINDS))
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


def _phases(name: str, phases: Iterable[str] | None) -> tuple[str, ...] | None:
    if phases is None:
        return None
    if isinstance(phases, str):  # "collect" would become the phases c, o, l, ...
        raise TypeError(f"job kind {name!r}: phases must be a list of names, not the string {phases!r}")
    declared = tuple(phases)
    if not declared or not all(isinstance(p, str) and p for p in declared):
        raise ValueError(f"job kind {name!r}: phases must be a non-empty list of non-empty names, got {declared!r}")
    if len(set(declared)) != len(declared):
        raise ValueError(f"job kind {name!r}: phases are listed twice in {declared!r}")
    return declared


def _where(handler: object) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"

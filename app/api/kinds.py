"""/kinds: the job kinds this API accepts, with their params' JSON Schema and phases.

For UIs that build a submission form and clients that check params before sending them.
The answer is the registry this process loaded at start (workers/kinds_loader.py), the
same one submissions are validated against; it reads nothing from Redis. Kinds are not
per tenant: any valid key may list them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get

from jobtrail.api.common import error_responses
from jobtrail.registry import kinds


class KindInfo(msgspec.Struct, frozen=True):
    name: str
    # JSON Schema (2020-12) of the kind's params, as msgspec derives it from the Struct;
    # a self-contained document (`$ref`s point into its own `$defs`).
    params_schema: dict[str, Any]
    # The only phases its handler may enter, in order; null when the kind does not declare them.
    phases: list[str] | None
    description: str | None  # the handler's docstring


class KindList(msgspec.Struct, frozen=True):
    kinds: list[KindInfo]  # sorted by name


@get(
    "/kinds",
    tags=["kinds"],
    summary="The job kinds this API accepts, with their params' JSON Schema and phases",
    description="Every kind `POST /jobs` accepts. `params_schema` is the JSON Schema a kind's `params` must match "
    "(else `POST /jobs` answers 422); `phases`, when not null, lists the phases its jobs go through.",
    responses=error_responses(),
)
async def list_kinds() -> KindList:
    return KindList(kinds=[
        KindInfo(
            name=spec.name,
            params_schema=msgspec.json.schema(spec.params),
            phases=list(spec.phases) if spec.phases is not None else None,
            description=spec.description,
        )
        for spec in sorted(kinds().values(), key=lambda spec: spec.name)
    ])

"""Errors carry their own HTTP answer: one handler finds it through the class hierarchy.

The routes here are added to the real app (create_app), which runs on the test's Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from litestar import get
from litestar.params import Parameter
from litestar.testing import AsyncTestClient

from jobtrail.api.app import create_app
from jobtrail.api.errors import error_codes
from jobtrail.config import Settings
from jobtrail.errors import (
    AttemptSuperseded,
    InvalidParams,
    JobReplaced,
    JobtrailError,
    NotAuthenticated,
    RateLimited,
    TransitionRefused,
    UnknownKind,
)


class LateRefusal(TransitionRefused):
    """A subclass written after the handler, declaring nothing of its own."""

    def __init__(self) -> None:
        JobtrailError.__init__(self, "refused by a type the handler never heard of")


class SlowDown(RateLimited):
    def __init__(self) -> None:
        super().__init__("slow down", 7)


class Undeclared(JobtrailError):
    """No status of its own: a bug, answered as one."""


@get("/raise/{name:str}", sync_to_thread=False)
def raise_named(name: Annotated[str, Parameter(description="which error to raise")]) -> None:
    raise {
        "late": LateRefusal(),
        "replaced": JobReplaced("j", "progress", "running"),
        "superseded": AttemptSuperseded("j", "progress", "running", 1, 2),
        "unknown-kind": UnknownKind("acme.nope", ["demo"]),
        "slow": SlowDown(),
        "undeclared": Undeclared("nobody said what this is"),
    }[name]


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings)
    app.register(raise_named)
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_a_subclass_defined_after_the_handler_answers_its_parents_status_and_code_not_500(http):
    response = await http.get("/raise/late")
    assert response.status_code == 409
    assert response.json() == {"error": "transition_refused", "detail": "refused by a type the handler never heard of"}


@pytest.mark.parametrize(("name", "status", "code"), [
    ("replaced", 409, "transition_refused"),
    ("superseded", 409, "transition_refused"),
    ("unknown-kind", 422, "invalid_params"),
])
async def test_subclasses_that_the_old_map_did_not_name_answer_as_their_parents(http, name, status, code):
    response = await http.get(f"/raise/{name}")
    assert (response.status_code, response.json()["error"]) == (status, code)


async def test_a_subclass_inherits_the_headers_its_parent_sends(http):
    response = await http.get("/raise/slow")
    assert (response.status_code, response.json()["error"]) == (429, "rate_limited")
    assert response.headers["retry-after"] == "7"


async def test_an_error_type_that_declares_no_answer_is_a_logged_500_without_its_message(http):
    response = await http.get("/raise/undeclared")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "an unexpected error occurred; it has been logged"}


def test_the_status_and_code_are_on_the_class_and_inherited():
    expected = (422, "invalid_params")
    assert (InvalidParams.status, InvalidParams.code) == (UnknownKind.status, UnknownKind.code) == expected
    assert NotAuthenticated("no").headers() == {"WWW-Authenticate": "Bearer"}


def test_error_codes_walks_the_class_hierarchy():
    class Teapot(InvalidParams, status=418, code="teapot"):
        pass

    try:
        assert (418, "teapot") in error_codes()
    finally:
        # Forgotten by the hierarchy once collected, so the README's table stays exact for other tests.
        del Teapot
        import gc

        gc.collect()
    assert (418, "teapot") not in error_codes()


def test_declaring_a_status_without_a_code_is_refused_at_once():
    with pytest.raises(TypeError, match="both status and code"):
        class Half(JobtrailError, status=400):
            pass

"""The event loop `serve` and `worker` run on: uvloop by default, the stdlib's with JOBTRAIL_LOOP=asyncio."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from jobtrail import eventloop
from jobtrail.config import Settings


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_uvloop_is_the_default_and_asyncio_one_setting_away():
    assert isinstance(eventloop.run(running_loop(), Settings()), uvloop.Loop)
    stdlib = eventloop.run(running_loop(), Settings.from_env({"JOBTRAIL_LOOP": "asyncio"}))
    assert not isinstance(stdlib, uvloop.Loop) and isinstance(stdlib, asyncio.BaseEventLoop)


def test_an_unknown_loop_or_parser_stops_at_start():
    for name, value in (("JOBTRAIL_LOOP", "tokio"), ("JOBTRAIL_HTTP", "h2")):
        with pytest.raises(ValueError, match="invalid configuration"):
            Settings.from_env({name: value})

"""The event loop `jobtrail serve` and `jobtrail worker` run on: uvloop, unless JOBTRAIL_LOOP=asyncio.

uvloop (libuv, in C) does a loop iteration, a socket read and a transport write for a
fraction of what the stdlib's selector loop costs in Python; for the API that is a large
share of a small request's CPU, and for the worker of each Redis round trip. The stdlib
loop stays one setting away, for a platform uvloop does not build on or a bug to rule out.
The bench's bare app (bench/bare_app.py) takes its loop from here too, so that the HTTP
rows compare jobtrail with a bare app on the same loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from jobtrail.config import Settings

T = TypeVar("T")


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the loop `settings.loop` names (imported only when chosen)."""
    if settings.loop == "asyncio":
        return asyncio.new_event_loop
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        return runner.run(main)

"""Pipelines shared by concurrent callers: what several requests queue in one loop turn goes out in one round trip.

A submission's last round trip (its feed entry, index entries, claim and enqueue) depends
on no other's, and a busy API has several of them ready at once. Each caller's commands
still reach Redis in its own order, behind the ones queued before them, and each gets back
its own replies; a round trip's cost (a connection from the pool, a write, a read, the
pipeline's bookkeeping) is paid once for all of them. Like ioredis's auto-pipelining, but
only where a caller asks for it.

With `in_flight`, at most that many round trips are out at once, and callers arriving
meanwhile wait for the next one, all together. That is for a worker, whose deliveries
reach Redis a few loop turns apart (taskiq hands over a read's messages one by one):
one turn's callers alone would mostly be one caller each, while a round trip in flight
gathers every caller of the time it takes. An idle worker loses nothing (nothing is in
flight, so a lone caller goes at once); a busy one pays one round trip for several jobs.

`linger_turns` holds each batch for that many more turns of the loop before it goes: the
callers a round trip's replies wake take a few turns each (a task's wake-up, a task it
starts) before they queue their next commands, and a batch sent at the first turn leaves
most of them to the round trip after. A busy worker then sends fewer, fuller round trips;
what a caller waits is a few loop turns, microseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import Pipeline

Queue = Callable[[Pipeline], object]


class SharedPipeline:
    """Batches the commands `run` is given during one turn of the event loop into one pipeline.

    With `in_flight`, batches wait while that many round trips are out (see the module's docstring).
    """

    def __init__(self, redis: Any, *, in_flight: int | None = None, linger_turns: int = 0) -> None:
        self.redis = redis
        self.in_flight = in_flight
        self.linger_turns = linger_turns
        self._waiting: list[tuple[Queue, asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def run(self, queue: Queue) -> list[Any]:
        """The replies to what `queue` puts on the pipeline (errors as values, `raise_on_error=False`).

        A failure of the round trip itself (the connection, the pool) raises for every
        caller of the batch. A caller cancelled meanwhile does not stop the others', and
        one cancelled before its batch went out sends nothing.
        """
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((queue, done))
        self._schedule()
        return await done

    def _schedule(self) -> None:
        if self._scheduled or not self._waiting:
            return
        if self.in_flight is not None and len(self._sending) >= self.in_flight:
            return  # the round trip that comes back first sends this batch (`_sent`)
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._send, self.linger_turns)

    def _send(self, turns: int = 0) -> None:
        if turns > 0:
            asyncio.get_running_loop().call_soon(self._send, turns - 1)
            return
        self._scheduled = False
        batch, self._waiting = [entry for entry in self._waiting if not entry[1].done()], []
        if not batch:
            return
        task = asyncio.ensure_future(self._execute(batch))
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._schedule()

    async def _execute(self, batch: list[tuple[Queue, asyncio.Future[list[Any]]]]) -> None:
        try:
            spans, replies = await self._round_trip(batch)
        except GeneratorExit:  # a pending batch collected with its closed loop: nobody to tell
            raise
        except BaseException as exc:  # the round trip failed (or was cancelled): every caller hears of it
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (start, end), (_, done) in zip(spans, batch, strict=True):
            if not done.done():
                done.set_result(replies[start:end])

    async def _round_trip(
        self, batch: list[tuple[Queue, asyncio.Future[list[Any]]]]
    ) -> tuple[list[tuple[int, int]], list[Any]]:
        """Send the batch's commands; a caller whose `queue` raises gets that error and sends nothing.

        Its half-queued commands cannot be taken off a pipeline, so the pipeline is built
        again without it (`batch` loses it, in place).
        """
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                spans: list[tuple[int, int]] = []
                for position, (queue, done) in enumerate(batch):
                    start = len(pipe)
                    try:
                        queue(pipe)
                    except Exception as exc:
                        if not done.done():
                            done.set_exception(exc)
                        del batch[position]
                        break
                    spans.append((start, len(pipe)))
                else:
                    if not batch:
                        return [], []
                    return spans, await pipe.execute(raise_on_error=False)

"""A request's deadline (app/api/bounds.py): `asyncio.timeout`, with pauses that arm no timer.

Every `POST` pauses its deadline while it waits for the body, and `asyncio.Timeout`
pauses by rescheduling: a timer cancelled at the pause and a new one armed at the
resume, on every request, and the timeout's own bookkeeping around both (about 5 % of
a small submission's CPU in py-spy). Here a pause only notes the loop's time: the one
timer, armed at the start, finds on firing how long the request was paused and is armed
again for what is left; fired during a pause, it is armed again when the pause ends.
The time counted is the same as with `asyncio.timeout` paused by `reschedule`.

On expiry it does what `asyncio.timeout` does: cancels the task, and turns that
cancellation (and only that one, when no other cancel came in meanwhile) into a
TimeoutError as the `async with` block exits. One thing more: until the block exits, it
cancels again every _AGAIN_S. redis-py writes each command under `asyncio.wait_for`,
whose Python 3.11 version returns the write's result, and drops the cancellation, when
the cancel lands in the loop turn where the write finished (cpython gh-86296; 3.12
rebuilt wait_for on asyncio.timeout). A request cut that way went on into a stalled
Redis and answered when it came back, seconds after its deadline.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

# Timers may fire a little before their time (the loop's clock resolution; uvloop's is a
# millisecond): this close to the end counts as the end, rather than a timer of ~0 s more.
_EARLY_S = 0.001
# How long a cancellation has to end the block before it is sent again: far longer than
# the cleanup a cancelled request does (dropping a connection, without waiting on it).
_AGAIN_S = 0.05


class Deadline:
    """`async with Deadline(seconds)`: the enclosing task is cancelled once `seconds` pass, pauses not counted."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._end = 0.0  # loop time of the end, the pauses so far added
        self._paused_at = 0.0
        self._pauses = 0  # nested pauses (a body's receive inside a route's deadline_paused)
        self._due = False  # fired during a pause: armed again at its end
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False
        self._stopped = False
        self._cancelling = 0
        self._cancels = 0  # ours, each to be taken back as the block exits

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._end = self._loop.time() + self._seconds
        self._handle = self._loop.call_at(self._end, self._fire)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        # As asyncio.Timeout: our cancellation becomes a TimeoutError, one from elsewhere stays.
        if not self._expired:
            return
        cancelling = self._task.cancelling()
        for _ in range(self._cancels):
            cancelling = self._task.uncancel()
        if cancelling <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expired(self) -> bool:
        """Whether the deadline passed (the task's cancellation is then on its way, or done)."""
        return self._expired

    def stop(self) -> None:
        """No expiry from now on (the answer has started); a deadline already expired stays so."""
        self._stopped = True
        self._due = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def pause(self) -> None:
        if not self._pauses:
            self._paused_at = self._loop.time()
        self._pauses += 1

    def resume(self) -> None:
        self._pauses -= 1
        if self._pauses:
            return
        self._end += self._loop.time() - self._paused_at
        if self._due:
            self._due = False
            self._handle = self._loop.call_at(self._end, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._stopped or self._expired:
            return
        if self._pauses:
            self._due = True
            return
        if self._end - self._loop.time() > _EARLY_S:
            self._handle = self._loop.call_at(self._end, self._fire)
            return
        self._expired = True
        self._cancel()

    def _cancel(self) -> None:
        # Stopped (the block exiting, or its answer started): a cancellation now would
        # land outside what it bounds.
        self._handle = None
        if self._stopped:
            return
        self._cancels += 1
        self._task.cancel()
        self._handle = self._loop.call_later(_AGAIN_S, self._cancel)

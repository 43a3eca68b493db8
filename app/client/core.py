"""Every client operation, once: the requests it makes and how it reads the answers (sans-IO).

Each method is an operation (app/client/effects.py): `Client` and `AsyncClient` run
the same generators over httpx, so the two differ only in how they perform I/O.
Round trips: one per call, except `history` (one per page), `wait` (a GET, the event
stream, a GET), and the streams (one per connection).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec

from jobtrail.client.effects import EFFECTS, Call, Open, Operation, Read, Reply
from jobtrail.client.errors import ChecksumMismatch, ClientError, WaitTimeout, error_from
from jobtrail.client.follow import OnReconnect, Policy, follow
from jobtrail.client.models import Event, FeedGap, Gap, HistoryPage, JobState, Token, Transition
from jobtrail.client.sse import Block

T = TypeVar("T")
_ETAGS_KEPT = 1024  # jobs whose last state `get` keeps for If-None-Match


def decode(reply: Reply, type_: type[T]) -> T:
    return msgspec.json.decode(reply.content, type=type_)


def checked(reply: Reply, *ok: int) -> Reply:
    """The reply, if its status is one of `ok`; else the API's error, typed."""
    if reply.status not in ok:
        raise error_from(reply.status, reply.headers, reply.content)
    return reply


def _job(job_id: str, *rest: str) -> str:
    return "/".join(["/jobs", quote(job_id, safe=""), *rest])


def _job_item(block: Block) -> Event | Gap:
    data = (block.data or "").encode()
    if block.event == "gap":
        return Gap(msgspec.json.decode(data, type=JobState))
    return msgspec.json.decode(data, type=Event)


def _feed_item(block: Block) -> Transition | FeedGap:
    data = (block.data or "").encode()
    if block.event == "gap":
        return msgspec.json.decode(data, type=FeedGap)
    return msgspec.json.decode(data, type=Transition)


def _ends_job(item: Event | Gap) -> bool:
    return isinstance(item, Event) and item.terminal


class ClientCore:
    """Operations against one API; holds the ETags of the states `get` has seen."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._etags: OrderedDict[str, tuple[str, JobState]] = OrderedDict()

    def submit(
        self, kind: str, params: dict[str, Any] | None = None, *, idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Operation[JobState]:
        body: dict[str, Any] = {"kind": kind, "params": params or {}}
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        reply = yield Call(method="POST", path="/jobs", json=body, headers=headers)
        return decode(checked(reply, 200, 202), JobState)

    def get(self, job_id: str) -> Operation[JobState]:
        """The job's state; with the ETag of the last one seen, a 304 returns that one (the same object)."""
        cached = self._etags.get(job_id)
        headers = {"If-None-Match": cached[0]} if cached else None
        reply = yield Call(method="GET", path=_job(job_id), headers=headers)
        if reply.status == 304 and cached:
            self._etags.move_to_end(job_id)
            return cached[1]
        state = decode(checked(reply, 200), JobState)
        etag = reply.headers.get("etag")
        if etag:
            self._etags[job_id] = (etag, state)
            self._etags.move_to_end(job_id)
            while len(self._etags) > _ETAGS_KEPT:
                self._etags.popitem(last=False)
        return state

    def history(self, job_id: str, *, after: str | None = None, page_size: int = 100) -> Operation[None]:
        """Yields every event after `after`, oldest first, a page per round trip."""
        while True:
            params = {"limit": str(page_size), **({"after": after} if after else {})}
            reply = yield Call(method="GET", path=_job(job_id, "history"), params=params)
            page = decode(checked(reply, 200), HistoryPage)
            yield from page.events
            if page.next is None or not page.events:
                return
            after = page.next

    def events(
        self, job_id: str, after: str | None = None, *, on_reconnect: OnReconnect | None = None,
        deadline: float | None = None, on_deadline: Any = None,
    ) -> Operation[None]:
        """Yields the job's events (and any `Gap`) after `after`, resuming by itself, until the terminal one."""
        return follow(
            _job(job_id, "events"), None, after, _job_item, policy=self.policy, ends=_ends_job,
            deadline=deadline, on_deadline=on_deadline, on_reconnect=on_reconnect,
        )

    def wait(self, job_id: str, timeout: float | None = None) -> Operation[JobState]:
        """The job's state once it has ended, followed on its event stream (not polled)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = yield from self.get(job_id)
        if state.terminal:
            return state
        stream = self.events(
            job_id, state.last_event_id or None, deadline=deadline,
            on_deadline=lambda: WaitTimeout(job_id, timeout or 0.0),
        )
        yield from _effects_only(stream)
        return (yield from self.get(job_id))

    def cancel(self, job_id: str, reason: str | None = None) -> Operation[JobState]:
        body = {"reason": reason} if reason is not None else None
        reply = yield Call(method="POST", path=_job(job_id, "cancel"), json=body, has_body=body is not None)
        return decode(checked(reply, 200, 202), JobState)

    def delete(self, job_id: str) -> Operation[None]:
        reply = yield Call(method="DELETE", path=_job(job_id))
        checked(reply, 204)
        self._etags.pop(job_id, None)

    def token(self, job_id: str, ttl_s: int | None = None) -> Operation[Token]:
        body = {"ttl_s": ttl_s} if ttl_s is not None else None
        reply = yield Call(method="POST", path=_job(job_id, "tokens"), json=body, has_body=body is not None)
        return decode(checked(reply, 201), Token)

    def activity(
        self, kind: str | None = None, state: str | None = None, after: str | None = None, *,
        on_reconnect: OnReconnect | None = None,
    ) -> Operation[None]:
        """Yields the activity feed's transitions (and any `FeedGap`), resuming by itself; it never ends.

        `after=None` starts at the live tail, as the API does; `after="0-0"` first replays
        all the feed still holds.
        """
        params = {name: value for name, value in (("kind", kind), ("state", state)) if value is not None}
        return follow("/events", params or None, after, _feed_item, policy=self.policy, on_reconnect=on_reconnect)

    def download_artifact(self, job_id: str, path: str | os.PathLike[str]) -> Operation[Path]:
        """Stream the job's file to `path`: written under a temporary name, checked, then renamed into place."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        reply = yield Open(Call(method="GET", path=_job(job_id, "artifact")), None)
        checked(reply, 200)
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as out:
                while chunk := (yield Read()):
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            expected = reply.headers.get("etag", "").strip('"')  # the API's ETag is the file's SHA-256
            if expected and expected != digest.hexdigest():
                detail = f"artifact of job {job_id!r}: got sha256 {digest.hexdigest()}, expected {expected}"
                raise ChecksumMismatch(200, "checksum_mismatch", detail)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target


def _effects_only(operation: Operation[T]) -> Operation[T]:
    """Run `operation` inside another, passing its effects up and dropping its items."""
    outcome: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = operation.throw(error) if error is not None else operation.send(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            outcome, error = None, None
            if isinstance(step, EFFECTS):
                try:
                    outcome = yield step
                except ClientError as exc:
                    error = exc
    finally:
        operation.close()

"""Importing jobs that legacy systems kept as JSON strings into jobtrail's event log.

The legacy migrations (0001 export jobs, 0002 generic jobs) each decode their own
format into a `LegacyJob`; this module turns it into the events that explain its status,
with the original timestamps, and appends them. Per key it is idempotent: every event is
appended with an idempotency key, so re-importing an imported job writes nothing, and a
job a crashed run left half-imported is completed by the next run.

How legacy statuses become jobtrail jobs:
- queued: `submitted` only. The job is pending and is NOT enqueued: jobtrail has no
  handler for legacy kinds. It can be cancelled through the API.
- running/processing: `submitted`, `started`, then `failed` with error type
  `LegacyInterrupted` at import time. Its legacy worker is not part of jobtrail, so as
  "running" it would never end (cancelling a running job only flags it for its worker).
- done/completed: `submitted`, `started`, `succeeded` with the legacy result.
- error/failed: `submitted`, `started`, `failed` with error type `LegacyError`.
`submitted` and `started` carry the legacy creation time (legacy systems kept no start
time); the terminal event carries the legacy completion/update time, else the creation time.
A legacy key's remaining TTL is kept: a terminal job gets it as its retention, a pending
one gets it as a PEXPIRE. A legacy key without a TTL leaves the normal retention.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec
from redis.exceptions import RedisError, ResponseError

from jobtrail.errors import JobExists, JobNotFound, TransitionRefused
from jobtrail.events import ErrorInfo, EventType, check_data
from jobtrail.keys import JOB_ID_RE
from jobtrail.migrations import Context, MigrationFailed, Report, Skipped
from jobtrail.scan import scan_batches

# What legacy systems wrote as a timestamp: ISO 8601 (naive means UTC), or epoch s or ms.
Stamp = str | int | float
LegacyStatus = Literal["queued", "running", "succeeded", "failed"]

ERROR_TYPE = "LegacyError"
INTERRUPTED_TYPE = "LegacyInterrupted"
SCAN_COUNT = 500
_MESSAGE_MAX = 2000  # app.events.Text
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Malformed(ValueError):
    """A legacy value that cannot be imported; the message says why."""


class LegacyJob(NamedTuple):
    """A legacy job decoded and normalized, before it becomes events."""

    key: str
    id: str
    kind: str
    status: LegacyStatus
    created_ms: int
    finished_ms: int | None = None
    result: Any = None
    error: str | None = None


class Planned(NamedTuple):
    type: EventType
    data: dict[str, Any]
    attempt: int
    at_ms: int


T = TypeVar("T")
Parse = Callable[[str, str, str], LegacyJob]  # (legacy key, id in the key, raw value) -> job


def decode(raw: str, type_: type[T]) -> T:
    """A legacy JSON value as `type_`; Malformed if it is not JSON or not that shape."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise Malformed(f"unexpected JSON: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Malformed(f"not JSON: {exc}") from None


def to_ms(value: Stamp, field: str) -> int:
    """Epoch ms of a legacy timestamp: ISO 8601 (naive = UTC), or epoch seconds or ms."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _iso_to_ms(value, field)
        value = number
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise Malformed(f"{field} {value!r} is not a timestamp")
    # Epoch seconds stay below 1e11 until the year 5138; epoch ms passed it in 1973.
    return round(value) if value >= 1e11 else round(value * 1000)


def _iso_to_ms(value: str, field: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"{field} {value!r} is not a timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if ms < 0:
        raise Malformed(f"{field} {value!r} is before 1970")
    return ms


def plan(job: LegacyJob, now_ms: int) -> list[Planned]:
    """The events that explain the legacy job's status (validated; Malformed if not valid)."""
    params = {"legacy_key": job.key, "legacy_id": job.id}
    events = [Planned(EventType.SUBMITTED, {"kind": job.kind, "params": params, "max_attempts": 1}, 0, job.created_ms)]
    if job.status != "queued":
        events.append(Planned(EventType.STARTED, {"worker": "legacy", "attempt": 1}, 1, job.created_ms))
    finished = job.created_ms if job.finished_ms is None else job.finished_ms
    if job.status == "running":
        message = (
            "was still running in the legacy system when it was imported into jobtrail, which has no "
            "worker for it; submit it again if it is still needed"
        )
        events.append(Planned(EventType.FAILED, {"error": _error(INTERRUPTED_TYPE, message)}, 1, now_ms))
    elif job.status == "succeeded":
        events.append(Planned(EventType.SUCCEEDED, {"result": job.result}, 1, finished))
    elif job.status == "failed":
        message = job.error or "the legacy system recorded no error message"
        events.append(Planned(EventType.FAILED, {"error": _error(ERROR_TYPE, message)}, 1, finished))
    try:
        return [event._replace(data=check_data(event.type, event.data)) for event in events]
    except msgspec.ValidationError as exc:
        raise Malformed(f"cannot be expressed as jobtrail events: {exc}") from None


def _error(type_: str, message: str) -> ErrorInfo:
    if len(message) > _MESSAGE_MAX:
        message = message[: _MESSAGE_MAX - 1] + "…"
    return ErrorInfo(type=type_, message=message)


def fallback_id(key: str) -> str:
    """The job id of a legacy key whose own id is not a valid job id (or is taken)."""
    return "legacy-" + hashlib.sha256(key.encode()).hexdigest()[:32]


async def import_jobs(ctx: Context, key_of: Callable[[str], str], parse: Parse) -> Report:
    """Import every legacy key of one family (`key_of` builds its keys from an id).

    Round trips: a SCAN page, one pipeline reading that page's values and TTLs, then per
    job its appends and an index ZADD.
    """
    report = Report()
    seen: set[str] = set()  # SCAN may return a key twice
    own = ctx.keys.prefix + ":"
    async for found in scan_batches(ctx.redis, ctx.legacy.pattern(key_of), SCAN_COUNT):
        batch = [key for key in found if key not in seen and not key.startswith(own)]
        seen.update(batch)
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.get(key)
                pipe.pttl(key)
            replies = await pipe.execute(raise_on_error=False)
        for i, key in enumerate(batch):
            ctx.checkpoint()
            raw, ttl_ms = replies[2 * i], replies[2 * i + 1]
            if raw is None:
                continue  # expired or deleted since the SCAN: nothing to import
            if isinstance(raw, ResponseError) and "WRONGTYPE" in str(raw):
                report.skipped.append(Skipped(key, "not a JSON string value (another Redis type)"))
                continue
            if isinstance(raw, Exception):
                raise MigrationFailed(f"reading {key}: {type(raw).__name__}: {raw}", key) from raw
            try:
                job = parse(key, ctx.legacy.id_in(key, key_of), raw)
                events = plan(job, int(time.time() * 1000))
            except Malformed as exc:
                report.skipped.append(Skipped(key, str(exc)))
                continue
            try:
                await _import(ctx, report, job, events, ttl_ms if isinstance(ttl_ms, int) and ttl_ms > 0 else None)
            except MigrationFailed:
                raise
            except Exception as exc:
                raise MigrationFailed(f"importing {key}: {type(exc).__name__}: {exc}", key) from exc
    return report


async def _import(ctx: Context, report: Report, job: LegacyJob, events: list[Planned], ttl_ms: int | None) -> None:
    candidates = [job.id] if JOB_ID_RE.match(job.id) else []
    candidates.append(fallback_id(job.key))
    for job_id in candidates:
        if ctx.dry_run:
            outcome = await _check(ctx, job_id, job.key)
        else:
            outcome = await _append(ctx, job_id, job.key, events, ttl_ms)
        if outcome == "taken":
            continue  # the id belongs to another job: try the next candidate
        if outcome == "imported":
            report.imported += 1
            if job.status == "running":
                report.interrupted.append(job.key)
            elif job.status == "queued":
                report.pending.append(job.key)
        else:
            report.already_imported += 1
        if not ctx.dry_run:
            await ctx.index.add(job_id, job.created_ms)
        return
    report.skipped.append(Skipped(job.key, f"job ids {', '.join(candidates)} all belong to other jobs"))


async def _check(ctx: Context, job_id: str, legacy_key: str) -> str:
    """What `_append` would do, reading only: imported, already or taken."""
    try:
        existing = await ctx.events.state(job_id)
    except JobNotFound:
        return "imported"
    return "already" if existing.params.get("legacy_key") == legacy_key else "taken"


async def _append(ctx: Context, job_id: str, legacy_key: str, events: list[Planned], ttl_ms: int | None) -> str:
    """Append the planned events as job `job_id` (one round trip each); imported, already or taken.

    Each event has an idempotency key naming the legacy key, so the events an earlier run
    appended come back as duplicates and only the missing ones are written; a job of
    another origin refuses the `submitted` (JobExists): the id is taken. A job this call
    created is removed again if a later append fails, so nothing is left half-imported.
    """
    retention_s = None if ttl_ms is None else math.ceil(ttl_ms / 1000)
    wrote = created = False
    try:
        for event in events:
            appended = await ctx.events.append(
                job_id, event.type, event.data, attempt=event.attempt, key=f"legacy-import:{event.type}:{legacy_key}",
                at_ms=event.at_ms, retention_s=retention_s,
            )
            wrote = wrote or not appended.duplicate
            created = created or (event.type is EventType.SUBMITTED and not appended.duplicate)
    except JobExists:
        return "taken"
    except TransitionRefused:
        # Half-imported by an earlier run, then changed through the API (say, cancelled
        # while pending): what it became since is the truth now, so it is left as is.
        return "already"
    except Exception:
        if created:
            await _remove(ctx, job_id)
        raise
    last = events[-1]
    if ttl_ms is not None and last.type is EventType.SUBMITTED:
        # A pending job gets no retention from the append script; keep the legacy TTL.
        # Also when already imported, if a crash came between its append and this.
        job_keys = ctx.keys.job_keys(job_id)
        if wrote or await ctx.redis.pttl(job_keys[0]) == -1:
            async with ctx.redis.pipeline(transaction=True) as pipe:
                for key in job_keys:
                    pipe.pexpire(key, ttl_ms)
                await pipe.execute()
    return "imported" if wrote else "already"


async def _remove(ctx: Context, job_id: str) -> None:
    try:
        await ctx.events.delete(job_id)
        await ctx.index.remove(job_id)
    except RedisError:
        pass  # the next run completes the partial job instead (its appends are idempotent)

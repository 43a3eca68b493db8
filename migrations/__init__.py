"""Versioned, idempotent Redis data migrations, applied in order by `jobtrail migrate`.

A migration is a module `mNNNN_<name>.py` in this package exposing `VERSION` ("0001"),
`NAME` and `async def apply(ctx: Context) -> Report`. The runner applies the pending ones
in version order and records each in the hash `keys.migrations()` (version -> when it was
applied and what it did); a recorded migration is not applied again. A migration must be
idempotent item by item, so a run that died halfway is safe to repeat. A migration that
raises stops the run, is not recorded, and the migrations after it do not run.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
from redis.asyncio import Redis

from jobtrail.eventlog import EventLog
from jobtrail.index import JobIndex
from jobtrail.keys import Keys, LegacyKeys
from jobtrail.lease import Lease

_MODULE = re.compile(r"m(\d{4})_\w+")
LOCK_TTL_S = 30.0


class Skipped(msgspec.Struct, frozen=True):
    """An item a migration left alone, and why (e.g. a malformed legacy value)."""

    key: str
    reason: str


class Report(msgspec.Struct, kw_only=True):
    """What one migration did (or, in a dry run, would do)."""

    imported: int = 0
    already_imported: int = 0
    skipped: list[Skipped] = []
    # Legacy keys of jobs imported this run that were still running (imported as failed)
    # or still queued (imported as pending, not enqueued): see migrations/README.md.
    interrupted: list[str] = []
    pending: list[str] = []


class Applied(msgspec.Struct, frozen=True, kw_only=True):
    """The record of one applied migration, a JSON value in the `keys.migrations()` hash."""

    version: str
    name: str
    applied_at: datetime
    imported: int
    already_imported: int
    skipped: int


class MigrationFailed(Exception):
    """A migration hit an unexpected error; `key` names the item it was processing."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class Context:
    """What a migration works with: Redis, jobtrail's keys and log, the legacy keys."""

    redis: Redis
    keys: Keys
    events: EventLog
    index: JobIndex
    legacy: LegacyKeys
    dry_run: bool = False
    lock: Lease | None = None

    def checkpoint(self) -> None:
        """Raise if this run lost its lock (another run may have taken over): stop now."""
        if self.lock is not None and self.lock.lost:
            raise MigrationFailed(f"lost the migration lock {self.lock.key}; stopping")


class Migration(NamedTuple):
    version: str
    name: str
    apply: Callable[[Context], Awaitable[Report]]


def discover() -> list[Migration]:
    """Every `mNNNN_*` module of this package, in version order."""
    found: dict[str, Migration] = {}
    for info in pkgutil.iter_modules(__path__):
        match = _MODULE.fullmatch(info.name)
        if not match:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if match[1] != module.VERSION:
            raise RuntimeError(f"migrations/{info.name}.py declares VERSION {module.VERSION!r}")
        if module.VERSION in found:
            raise RuntimeError(f"two migrations have version {module.VERSION}")
        found[module.VERSION] = Migration(module.VERSION, module.NAME, module.apply)
    return [found[version] for version in sorted(found)]


async def applied(ctx: Context) -> dict[str, Applied]:
    """The ledger: version -> record (one HGETALL)."""
    raw = await ctx.redis.hgetall(ctx.keys.migrations())
    return {version: msgspec.json.decode(value, type=Applied) for version, value in raw.items()}


async def migrate(ctx: Context, migrations: list[Migration] | None = None) -> list[tuple[Migration, Report]]:
    """Apply the pending migrations in order; returns what each did.

    Holds a lock so two runs never interleave. Raises MigrationFailed at the first
    migration that fails, after recording the ones before it. A dry run takes no lock
    and records nothing.
    """
    migrations = discover() if migrations is None else migrations
    if ctx.dry_run:
        return await _apply_pending(ctx, migrations)
    lock = Lease(ctx.redis, ctx.keys.migrations_lock(), f"migrate-{uuid.uuid4().hex[:8]}", LOCK_TTL_S)
    if not await lock.acquire():
        raise MigrationFailed(
            f"another `jobtrail migrate` is running (it holds {lock.key}, which expires "
            f"{LOCK_TTL_S:.0f} s after that run stops); try again once it has finished"
        )
    ctx.lock = lock
    try:
        async with lock.kept_alive():
            return await _apply_pending(ctx, migrations)
    finally:
        ctx.lock = None


async def _apply_pending(ctx: Context, migrations: list[Migration]) -> list[tuple[Migration, Report]]:
    done = await applied(ctx)
    reports = []
    for migration in migrations:
        if migration.version in done:
            continue
        try:
            report = await migration.apply(ctx)
        except MigrationFailed as exc:
            raise MigrationFailed(f"migration {migration.version} {migration.name} failed: {exc}", exc.key) from exc
        except Exception as exc:
            raise MigrationFailed(
                f"migration {migration.version} {migration.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not ctx.dry_run:
            record = Applied(
                version=migration.version,
                name=migration.name,
                applied_at=datetime.now(UTC),
                imported=report.imported,
                already_imported=report.already_imported,
                skipped=len(report.skipped),
            )
            await ctx.redis.hset(ctx.keys.migrations(), migration.version, msgspec.json.encode(record).decode())
        reports.append((migration, report))
    return reports

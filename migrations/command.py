"""`jobtrail migrate [--status] [--dry-run]`: apply pending migrations and print the report."""

from __future__ import annotations

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.index import JobIndex
from jobtrail.keys import Keys, LegacyKeys
from jobtrail.migrations import Context, Migration, MigrationFailed, Report, applied, discover, migrate
from jobtrail.store import Store


async def main(settings: Settings, *, status: bool = False, dry_run: bool = False) -> int:
    """Exit status: 0 when every pending migration applied (or --status), 1 on a failure."""
    if settings.embedded:
        print("migrate needs REDIS_URL: the embedded store lives only inside `jobtrail serve`")
        return 2
    redis = Store(settings, role="migrate").pooled()
    keys = Keys(settings.prefix)
    ctx = Context(
        redis=redis,
        keys=keys,
        events=EventLog(redis, keys, settings.retention_s),
        index=JobIndex(redis, keys),
        legacy=LegacyKeys(settings.legacy_prefix),
        dry_run=dry_run,
    )
    try:
        if status:
            await print_status(ctx)
            return 0
        try:
            reports = await migrate(ctx)
        except MigrationFailed as exc:
            print(f"FAILED: {exc}")
            print("Nothing was recorded for it and the migrations after it did not run; fix the cause and run again.")
            return 1
    finally:
        await redis.aclose()
    for migration, report in reports:
        print_report(migration, report, dry_run=dry_run)
    verb = "would apply" if dry_run else "applied"
    print(f"{len(reports)} migration(s) {verb}" + (" (dry run: nothing written)" if dry_run else ""))
    return 0


async def print_status(ctx: Context) -> None:
    done = await applied(ctx)
    for migration in discover():
        record = done.get(migration.version)
        if record is None:
            print(f"{migration.version} {migration.name}: pending")
        else:
            at = record.applied_at.isoformat().replace("+00:00", "Z")
            print(
                f"{migration.version} {migration.name}: applied {at} (imported {record.imported}, "
                f"already imported {record.already_imported}, skipped {record.skipped})"
            )


def print_report(migration: Migration, report: Report, *, dry_run: bool) -> None:
    imported = "would import" if dry_run else "imported"
    print(
        f"{migration.version} {migration.name}: {imported} {report.imported}, "
        f"already imported {report.already_imported}, skipped {len(report.skipped)}"
    )
    for skipped in report.skipped:
        print(f"  skipped {skipped.key}: {skipped.reason}")
    if report.interrupted:
        print(
            f"  {len(report.interrupted)} still running in the legacy system, {imported} as failed "
            f"(LegacyInterrupted): {', '.join(report.interrupted)}"
        )
    if report.pending:
        print(
            f"  {len(report.pending)} still queued in the legacy system, {imported} as pending and not enqueued "
            f"(cancel or delete them through the API): {', '.join(report.pending)}"
        )

"""`jobtrail repair`: rebuild state hashes from their streams (the streams are the truth)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from jobtrail.config import Settings
from jobtrail.errors import JobNotFound
from jobtrail.eventlog import EventLog
from jobtrail.scan import scan_batches
from jobtrail.services import open_services


async def _all_job_ids(events: EventLog) -> AsyncIterator[str]:
    """Every job with an event stream under the prefix (SCAN, in batches, on every node of a Cluster)."""
    async for batch in scan_batches(events.redis, events.keys.events("*"), 1000, "stream"):
        for key in batch:
            yield events.keys.job_id_of(key)


async def repair(settings: Settings, job_ids: list[str], *, check: bool = False) -> int:
    """Repair (or with `check`, only compare) jobs; exit status 1 when any hash was wrong."""
    if settings.embedded:
        print("repair needs REDIS_URL: the embedded store lives only inside `jobtrail serve`")
        return 2
    services = open_services(settings, role="repair")
    events = services.events
    checked = mismatched = broken = 0
    try:
        ids = job_ids or [job_id async for job_id in _all_job_ids(events)]
        for job_id in ids:
            checked += 1
            try:
                before, after = await events.rebuild(job_id, dry_run=check)
            except JobNotFound:
                print(f"{job_id}: no such job")
                broken += 1
                continue
            except ValueError as exc:  # IllegalHistory, or an entry that is no event at all
                print(f"{job_id}: stream is corrupt, not repaired: {exc}")
                broken += 1
                continue
            if before != after:
                mismatched += 1
                fields = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
                verb = "differs" if check else "repaired"
                print(f"{job_id}: {verb} ({', '.join(fields)})")
    finally:
        await services.aclose()
    print(f"{checked} checked, {mismatched} {'mismatched' if check else 'repaired'}, {broken} not repairable")
    return 1 if (mismatched and check) or broken else 0

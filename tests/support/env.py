"""Where the repository is, and the environment a `jobtrail` process started by a test gets.

Settings travel to a child process the way a user's do, as JOBTRAIL_* variables; the
test's own JOBTRAIL_* variables are dropped so they cannot leak into it.
"""

from __future__ import annotations

import os
from pathlib import Path

from jobtrail.config import Settings

ROOT = Path(__file__).resolve().parent.parent.parent


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
    env.update(
        REDIS_URL=settings.redis_url or "",
        JOBTRAIL_PREFIX=settings.prefix,
        JOBTRAIL_RETRY_BASE_S=str(settings.retry_base_s),
        JOBTRAIL_RETRY_MAX_S=str(settings.retry_max_s),
        JOBTRAIL_PROGRESS_INTERVAL_S=str(settings.progress_interval_s),
        JOBTRAIL_ARTIFACT_DIR=settings.artifact_dir,
        JOBTRAIL_LEASE_TTL_S=str(settings.lease_ttl_s),
        JOBTRAIL_REAPER_INTERVAL_S=str(settings.reaper_interval_s),
        JOBTRAIL_PENDING_STALE_S=str(settings.pending_stale_s),
        JOBTRAIL_SHUTDOWN_TIMEOUT_S=str(settings.shutdown_timeout_s),
        PYTHONUNBUFFERED="1",
    )
    return env

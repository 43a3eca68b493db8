"""Every Redis key name jobtrail uses, built here and nowhere else.

Per-job keys carry the job id as a Redis Cluster hash tag (`{ID}`), so the append
script can touch all of them atomically on a cluster too.
"""

from __future__ import annotations

import re

# Letters, digits and `_ . -`: safe inside a hash tag and in a URL path segment.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Keys:
    """Key names under one prefix (`jt` by default)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        """Hash: the job's current state (a cache of the fold of its stream)."""
        return f"{self.prefix}:job:{{{job_id}}}"

    def events(self, job_id: str) -> str:
        """Stream: every event of the job, oldest first. The source of truth."""
        return f"{self.prefix}:job:{{{job_id}}}:events"

    def dedupe(self, job_id: str) -> str:
        """Hash: producer idempotency key -> id of the event it produced."""
        return f"{self.prefix}:job:{{{job_id}}}:dedupe"

    def lease(self, job_id: str) -> str:
        """String: the worker currently running the job, expiring unless renewed."""
        return f"{self.prefix}:job:{{{job_id}}}:lease"

    def job_keys(self, job_id: str) -> tuple[str, str, str]:
        """The keys the append script takes, in its order (all get the retention TTL)."""
        return self.job(job_id), self.events(job_id), self.dedupe(job_id)

    def all_job_keys(self, job_id: str) -> tuple[str, ...]:
        """Every key one job may have."""
        return (*self.job_keys(job_id), self.lease(job_id))

    def index(self) -> str:
        """Sorted set: job id scored by creation time (ms). Derived, repairable."""
        return f"{self.prefix}:jobs"

    def queue(self) -> str:
        """Stream: the taskiq broker's message queue."""
        return f"{self.prefix}:queue"

    def hub_wake(self, hub_id: str) -> str:
        """Stream: written to wake one API process's hub when it gains a stream."""
        return f"{self.prefix}:hub:{hub_id}:wake"

    def job_id_of(self, job_key: str) -> str:
        """The job id inside a per-job key (inverse of `job`, `events`, `dedupe`)."""
        start = job_key.index("{") + 1
        return job_key[start : job_key.index("}", start)]

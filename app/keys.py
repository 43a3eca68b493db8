"""Every Redis key name jobtrail uses, built here and nowhere else.

Per-job keys carry the job id as a Redis Cluster hash tag (`{ID}`), so the append
script can touch all of them atomically on a cluster too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Letters, digits and `_ . -`: safe inside a hash tag and in a URL path segment.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")

# The state hash's fields that remember idempotency keys start with this (append.lua, append_many.lua):
# '@' + a writer's slot -> "key id", '@' + the key of an event that changes the job's state -> id.
# No field of the state itself does (app/reducer.py); app/jobstate.py: state_fields leaves them out.
DEDUPE_FIELD = "@"


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
        """Hash: producer idempotency key -> id of the event it produced, for the keys the state hash
        does not remember itself (`DEDUPE_FIELD`; append.lua's header): an API client's keyed reports.
        Most jobs have none."""
        return f"{self.prefix}:job:{{{job_id}}}:dedupe"

    def lease(self, job_id: str) -> str:
        """String: the worker currently running the job, expiring unless renewed."""
        return f"{self.prefix}:job:{{{job_id}}}:lease"

    def enqueue_claim(self, job_id: str) -> str:
        """String: set by the one request with the job's Idempotency-Key that queues its first run (SET NX,
        retention TTL). A job submitted without a key has none: its random id has no repeat to race."""
        return f"{self.prefix}:job:{{{job_id}}}:enqueued"

    def job_keys(self, job_id: str) -> tuple[str, str, str]:
        """The keys the append script takes, in its order (all get the retention TTL)."""
        return self.job(job_id), self.events(job_id), self.dedupe(job_id)

    def all_job_keys(self, job_id: str) -> tuple[str, ...]:
        """Every key one job may have."""
        return (*self.job_keys(job_id), self.lease(job_id), self.enqueue_claim(job_id))

    def index(self) -> str:
        """Sorted set: job id scored by creation time (ms). Derived, repairable."""
        return f"{self.prefix}:jobs"

    def activity(self) -> str:
        """Stream: every job's state transitions, capped; the feed an admin reads. Derived, best-effort."""
        return f"{self.prefix}:activity"

    def tenant_activity(self, tenant: str) -> str:
        """Stream: one tenant's jobs' transitions, capped like `activity`; the feed its keys read. Derived."""
        return f"{self.prefix}:tenant:{{{tenant}}}:activity"

    def queue(self) -> str:
        """Stream: the taskiq broker's message queue."""
        return f"{self.prefix}:queue"

    def migrations(self) -> str:
        """Hash: migration version -> JSON record of when it was applied and what it did."""
        return f"{self.prefix}:migrations"

    def migrations_lock(self) -> str:
        """String: held by the one `jobtrail migrate` allowed to run at a time."""
        return f"{self.prefix}:migrations:lock"

    def live(self) -> str:
        """Sorted set: ids of jobs not yet finished, scored by when the reaper should look at them (ms)."""
        return f"{self.prefix}:live"

    def reaper_lock(self) -> str:
        """String: held by the one worker reaping stalled jobs in the current interval."""
        return f"{self.prefix}:reaper:lock"

    def reaper_passes(self) -> str:
        """Hash: `last` (epoch ms of the latest reaper pass) and `calm_since` (since when passes came without a gap)."""
        return f"{self.prefix}:reaper:passes"

    def tenant_index(self, tenant: str) -> str:
        """Sorted set: one tenant's job ids by creation time (ms), like `index`."""
        return f"{self.prefix}:tenant:{{{tenant}}}:jobs"

    def tenant_of(self, tenant_key: str) -> str:
        """The tenant inside a per-tenant key (inverse of `tenant_index`, `sse_slots`, …)."""
        return self.job_id_of(tenant_key)

    def tenants(self) -> str:
        """Set: every tenant that has a job index, so the index sweep can find them. Derived."""
        return f"{self.prefix}:tenants"

    def sse_slots(self, tenant: str) -> str:
        """Sorted set: a tenant's open SSE connections, scored by when each expires unless renewed (ms)."""
        return f"{self.prefix}:tenant:{{{tenant}}}:sse"

    def submit_window(self, tenant: str, window: int) -> str:
        """String: a tenant's submissions in one minute-long window (a counter with a TTL)."""
        return f"{self.prefix}:tenant:{{{tenant}}}:submits:{window}"

    def server_secret(self) -> str:
        """String: the server secret (app/secret.py), when JOBTRAIL_TOKEN_SECRET is not set.

        Made once, never derived.
        """
        return f"{self.prefix}:auth:secret"

    def wake(self, stream: str) -> str:
        """Shard channel: SPUBLISHed after every entry added to `stream`, in `stream`'s slot.

        A job's carries [new id, previous id, the entry's fields] (app/append.lua), a feed's is empty.

        A stream with a hash tag keeps it; one without (the global feed) becomes the tag,
        so the channel hashes exactly as the key does and the publish lands on its node.
        """
        return f"{stream}:wake" if "{" in stream else f"{{{stream}}}:wake"

    def append_keys(self, job_id: str, *, terminal: bool = False) -> tuple[str, ...]:
        """What the append script is given: `job_keys`, the events stream's wake channel, and for a
        terminal event the enqueue claim, which it deletes."""
        keys = (*self.job_keys(job_id), self.wake(self.events(job_id)))
        return (*keys, self.enqueue_claim(job_id)) if terminal else keys

    def job_id_of(self, job_key: str) -> str:
        """The job id inside a per-job key (inverse of `job`, `events`, `dedupe`)."""
        start = job_key.index("{") + 1
        return job_key[start : job_key.index("}", start)]


class LegacyKeys:
    """Key names of the systems jobtrail replaces; migrations/ reads them, never writes them.

    They live outside jobtrail's prefix, under an optional prefix of their own (empty in
    production, a per-test one in tests).
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def export_job(self, job_id: str) -> str:
        """String: a JSON export job (`status` processing/completed/failed), kept with a TTL."""
        return f"{self.prefix}export_job:{job_id}"

    def job(self, job_id: str) -> str:
        """String: a JSON generic job (`status` queued/running/done/error)."""
        return f"{self.prefix}job:{job_id}"

    def pattern(self, key_of: Callable[[str], str]) -> str:
        """SCAN MATCH pattern for every key of one family, e.g. `pattern(legacy.export_job)`."""
        escaped = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix)
        return escaped + key_of("*")[len(self.prefix) :]

    def id_in(self, key: str, key_of: Callable[[str], str]) -> str:
        """The legacy id inside `key`, a key of the family `key_of` builds."""
        return key[len(key_of("")) :]

"""Submitting, cancelling and deleting jobs: the writes the API makes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline

from jobtrail.artifacts import ArtifactStore
from jobtrail.batching import SharedPipeline
from jobtrail.config import Settings
from jobtrail.errors import IdempotencyConflict, InvalidParams, JobExists, TransitionRefused
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType, ReasonData, State, SubmittedData
from jobtrail.index import JobIndex
from jobtrail.jobstate import JobState
from jobtrail.jsondepth import MAX_JSON_DEPTH, json_depth, nests_deeper_than
from jobtrail.livejobs import LiveJobs
from jobtrail.registry import validate_params
from jobtrail.secret import ServerSecret
from jobtrail.submission import index_job, record_submitted

log = logging.getLogger(__name__)

_UUID4_VARIANT_MASK = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_BITS = (0x8000 << 48) | (0x4000 << 64)


def uuid4_hex() -> str:
    """`uuid.uuid4().hex`, without building a UUID object (a submission's id; uuid4 showed in py-spy)."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_VARIANT_MASK | _UUID4_BITS:032x}"


Enqueue = Callable[[str], Awaitable[None]]
# Queues the enqueue's command on a pipeline instead; False when it cannot (then Enqueue runs).
QueueEnqueue = Callable[[Pipeline, str], bool]


class JobService:
    def __init__(
        self,
        events: EventLog,
        index: JobIndex,
        enqueue: Enqueue,
        settings: Settings,
        artifacts: ArtifactStore,
        *,
        secret: ServerSecret | None = None,
        queue: QueueEnqueue | None = None,
    ) -> None:
        self.events = events
        self.index = index
        self.artifacts = artifacts
        self.enqueue = enqueue
        self.queue = queue
        self.settings = settings
        self.live = LiveJobs(events.redis, events.keys, settings.pending_stale_s)
        # Concurrent submissions' last round trips (index, feed, claim, enqueue) go out as one.
        self.shared = SharedPipeline(events.redis)
        # The process's one server secret (the token signer's, from the composition root), so
        # ids and tokens converge together after Redis lost it; a secret of its own otherwise.
        self.secret = secret or ServerSecret(events.redis, events.keys, settings.token_secret)

    async def job_id_for(self, idempotency_key: str | None, tenant: str | None = None) -> str:
        """A fresh id, or the id an Idempotency-Key always maps to (so a retry finds its job).

        A keyed HMAC with the server secret (app/secret.py), which every API process
        shares: without the secret nobody can compute the id of a key, so a guessable
        key (an invoice number) gives away no other tenant's job id. The tenant is part
        of the message: two tenants using one key get two jobs, and neither can learn
        that the other's exists.
        """
        if idempotency_key is None:
            return uuid4_hex()
        message = f"{self.events.keys.prefix}\0{tenant or ''}\0{idempotency_key}".encode()
        return hmac.new(await self.secret.key("job-ids"), message, hashlib.sha256).hexdigest()[:32]

    async def submit(
        self,
        kind: str,
        params: dict[str, Any],
        max_attempts: int | None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> tuple[JobState, bool]:
        """Create and enqueue a job of `tenant`; returns (state, created). A repeated key returns the first job."""
        limit = self.settings.max_attempts_limit
        attempts = self.settings.default_max_attempts if max_attempts is None else max_attempts
        if not 1 <= attempts <= limit:
            raise InvalidParams(f"max_attempts must be between 1 and {limit}, got {attempts}")
        encoded = msgspec.json.encode(params)
        size = len(encoded)
        if size > self.settings.max_params_bytes:
            raise InvalidParams(
                f"params take {size} bytes as JSON; the limit is {self.settings.max_params_bytes} "
                "(JOBTRAIL_MAX_PARAMS_BYTES): pass large inputs by reference, e.g. a URL"
            )
        # Params are decoded again by workers, history and SSE: bounded here, not only in request bodies.
        if nests_deeper_than(encoded):
            raise InvalidParams(f"params nest {json_depth(encoded)} levels deep; at most {MAX_JSON_DEPTH} are allowed")
        data = SubmittedData(kind=kind, params=validate_params(kind, params), max_attempts=attempts, tenant=tenant)
        job_id = await self.job_id_for(idempotency_key, tenant)
        claim = self.events.keys.enqueue_claim(job_id)
        token = os.urandom(16).hex()  # only compared: any 128 random bits
        queued = False

        def claim_it(pipe: Pipeline) -> None:
            nonlocal queued
            if idempotency_key is None:
                # A fresh random id has no repeat that could race to enqueue it: the job is
                # this request's alone, so it needs no claim, and the enqueue rides in the
                # same round trip when it can. With a key, the claim's reply decides (below).
                queued = self.queue is not None and self.queue(pipe, job_id)
                return
            pipe.set(claim, token, nx=True, ex=self.settings.retention_s)
            pipe.get(claim)

        try:
            # Watched before it exists, in the append's round trip: whatever happens after
            # the append (a crash, a failed enqueue), the reaper (workers/reaper.py) queues
            # the job; an id that never became a job, it drops.
            job, replies = await record_submitted(
                self.events, self.index, job_id, data,
                before=lambda pipe: self.live.queue_track(pipe, job_id), also=claim_it, shared=self.shared,
            )
        except JobExists:
            existing = await self.events.state(job_id)
            if (existing.kind, existing.params, existing.max_attempts) != (data.kind, data.params, data.max_attempts):
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used for a different request; use a new key"
                ) from None
            # The request that created it may have died before indexing or enqueueing it.
            await index_job(self.index, existing)
            if existing.state is State.PENDING and existing.attempt == 0 and await self._holds_claim(claim, token):
                await self.enqueue(job_id)
            return existing, False
        if not queued and (idempotency_key is None or replies[-1] == token):
            await self.enqueue(job_id)
        return job, True

    async def _holds_claim(self, claim: str, token: str) -> bool:
        """Whether this request (`token`) is the one that queues the job's first run.

        The claim lives in the job's own slot and decides, among the creator and any number
        of racing repeats, the one that enqueues. The creator takes it in the round trip that
        indexes the job (SET NX, then GET: when that reply is lost and redis-py sends both
        again, the GET still shows this request's token). A request that dies between its
        claim and its enqueue leaves the job pending, which the reaper queues once it is stale.
        """
        if await self.events.redis.set(claim, token, nx=True, ex=self.settings.retention_s):
            return True
        return await self.events.redis.get(claim) == token

    async def cancel(self, job_id: str, reason: str | None = None) -> JobState:
        """Cancel a pending job now, or flag a running one for its handler to stop.

        Raises JobNotFound, or TransitionRefused when the job already finished.
        """
        data = ReasonData(reason=reason)
        job = await self.events.state(job_id)
        if job.terminal:
            raise TransitionRefused(job_id, EventType.CANCELLED, job.state)
        if job.state is State.PENDING:
            await self.events.append(job_id, EventType.CANCELLED, data, key="cancelled")
        else:
            await self.events.append(job_id, EventType.CANCEL_REQUESTED, data, key="cancel_requested")
        return await self.events.state(job_id)

    async def delete(self, job_id: str, tenant: str | None = None) -> bool:
        """Remove a job, its index entries and its artifacts; False when it did not exist."""
        existed = await self.events.delete(job_id)
        await self.index.remove(job_id, tenant)
        await asyncio.to_thread(self.artifacts.delete, job_id)
        return existed

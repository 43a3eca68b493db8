"""jobtrail's middleware for a user's own taskiq broker: each of its tasks becomes a job.

The job's id is the taskiq task id, its kind the task name. The middleware appends
through the same EventLog as jobtrail's runner (the same script, transition table and
attempt fence), so the API serves these jobs like any other:

- `post_send`, in the process that kicks: `submitted` (params: the arguments as JSON,
  workers/taskiq_json.py) and the job's index entries (app/submission.py).
  After the send, not before: a kick that fails leaves no job behind. A worker that is
  quicker than that finds no job and records `submitted` itself (`_start`), which also
  covers kicks from a process without the middleware; the slower writer gets JobExists.
  A retry middleware's kick of the same task id (`_retries` > 0) records nothing.
- `pre_execute`, in the worker: `started`, attempt `_retries + 1`.
- `on_error`: `retrying` when taskiq's retry middleware will kick the task again, else
  `failed`; `cancelled` when the task raised JobCancelled (workers/taskiq_retries.py says
  how that is decided, and why this middleware must come after the retry middleware).
- `post_execute`: `succeeded` with the return value as JSON.
Each is one append (one EVALSHA, plus the activity feed's XADD), `submitted` one more
round trip for the index.

What is not done, because taskiq owns delivery: no lease and no live-set entry, so the
reaper never queues these jobs (it could only queue them on jobtrail's own queue). A
worker killed mid-task leaves its job running until taskiq-redis delivers the message
again (after its idle timeout); that delivery finds `started` of its attempt already
written and goes on with the same attempt.

A Redis failure (or a bug) in the middleware never fails the user's task: it is logged
and that event is missing. `submitted` missing: the worker records it. `started`
missing: that attempt is not observed (its progress and outcome are not written). An
outcome missing: the job stays running (or pending) in jobtrail; the task's own result
is untouched. Progress through the context is likewise best-effort (TaskiqJobContext).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from redis.exceptions import RedisError
from taskiq import Context, TaskiqDepends, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from jobtrail.auth import TENANT_RE
from jobtrail.config import Settings
from jobtrail.errors import JobExists, JobNotFound, TransitionRefused
from jobtrail.eventlog import Appended, EventLog
from jobtrail.events import (
    EventType,
    FailedData,
    ReasonData,
    RetryingData,
    StartedData,
    State,
    SubmittedData,
    SucceededData,
)
from jobtrail.index import JobIndex
from jobtrail.keys import JOB_ID_RE, Keys
from jobtrail.replicawait import ReplicaWait
from jobtrail.store import Store
from jobtrail.submission import record_submitted
from jobtrail.workers.context import AttemptLost, JobCancelled, JobContext, PermanentFailure
from jobtrail.workers.runner import error_info
from jobtrail.workers.taskiq_json import params_of, result_of
from jobtrail.workers.taskiq_retries import (
    attempt_of,
    check_order,
    disable_retry,
    is_retry_kick,
    max_attempts,
    retry_delay,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Set by taskiq's Context.requeue, which sends the same message again and raises NoResultError.
REQUEUE_LABEL = "X-Taskiq-requeue"
# Names one delivery, from its start to its end, among the runs of this process. Not the
# task id (nor the attempt): a retry or a requeue of the same task can start here before
# the delivery that kicked it has ended, and the retry middleware's kick even changes
# `_retries` in the labels of the message that failed (its kicker updates that very
# dict). A kick carries this label on; each delivery's start writes its own.
DELIVERY_LABEL = "jobtrail_delivery"


class TaskiqJobContext(JobContext):
    """A JobContext whose writes never fail the user's task for jobtrail's sake.

    A write Redis does not take is logged and dropped, and the task goes on; a context
    for an attempt jobtrail does not observe writes nothing. Cancellation still raises
    JobCancelled at the next write after the flag is seen.
    """

    def __init__(self, events: EventLog, job_id: str, attempt: int, *, min_interval_s: float) -> None:
        super().__init__(events, job_id, attempt, min_interval_s=min_interval_s)
        self.observed = False  # True once this attempt's `started` is in the job's stream

    async def _write(self, event_type: EventType, data: Any) -> Appended:
        if self.observed:
            try:
                return await super()._write(event_type, data)
            except RedisError as exc:
                log.warning("job %s: %s not written (%s); the task goes on", self.job_id, event_type, exc)
        return Appended(id="", state=State.RUNNING, cancel_requested=self.cancel_requested)

    async def check_cancelled(self) -> None:
        if not self.observed:
            return
        try:
            await super().check_cancelled()
        except RedisError as exc:
            log.warning("job %s: could not ask whether it was cancelled (%s)", self.job_id, exc)


@dataclass
class _Run:
    """One delivery of a task in this worker process, from `pre_execute` to `post_execute`."""

    ctx: TaskiqJobContext
    requeues: Any  # the requeue label before the task ran
    cancelled: bool = False  # the job was cancelled before this delivery started
    ended: bool = False  # `on_error` took care of the outcome


class JobtrailMiddleware(TaskiqMiddleware):
    """Makes every task of the broker it is added to a jobtrail job.

    Redis is `redis_url` (else REDIS_URL) under `prefix` (else JOBTRAIL_PREFIX, `jt`),
    the API's own; or pass the `events` of a process that has one. Other settings come
    from the JOBTRAIL_* variables as for jobtrail's processes (retention, progress
    interval, JOBTRAIL_MAX_PARAMS_BYTES for the arguments). With `tenant`, the jobs
    belong to that tenant. Nothing connects until the first event.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str | None = None,
        tenant: str | None = None,
        events: EventLog | None = None,
    ) -> None:
        super().__init__()
        settings = Settings.from_env()
        if tenant is not None and not TENANT_RE.match(tenant):
            raise ValueError(f"tenant {tenant!r}: letters, digits and `_.-`, at most 64")
        self._owns_redis = events is None
        if events is None:
            overrides = {"redis_url": redis_url, "prefix": prefix}
            settings = msgspec.structs.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
            if settings.embedded:
                raise ValueError(
                    "JobtrailMiddleware needs the Redis of jobtrail's API: pass redis_url= or set REDIS_URL"
                )
            events = EventLog(
                Store(settings, role="taskiq").pooled(), Keys(settings.prefix), settings.retention_s,
                activity_maxlen=settings.activity_maxlen,
                replica_wait=ReplicaWait(settings.wait_replicas, settings.wait_timeout_ms),
            )
        elif redis_url is not None or prefix is not None:
            raise ValueError("pass either events or redis_url/prefix, not both")
        self.settings = settings
        self.events = events
        self.index = JobIndex(events.redis, events.keys)
        self.tenant = tenant
        self._runs: dict[str, _Run] = {}  # by DELIVERY_LABEL

    def startup(self) -> None:
        check_order(self.broker, self)

    async def shutdown(self) -> None:
        if self._owns_redis:
            await self.events.redis.aclose()

    # --- the producer's side ---

    async def post_send(self, message: TaskiqMessage) -> None:
        if not is_retry_kick(message) and self._observable(message):
            await self._guarded(self._submit(message), "submitted", message)

    async def _submit(self, message: TaskiqMessage) -> None:
        data = SubmittedData(
            kind=message.task_name, params=params_of(message, self.settings.max_params_bytes),
            max_attempts=max_attempts(self.broker, message), tenant=self.tenant,
        )
        # JobExists: recorded by the worker, which was quicker, or by an earlier kick of this id.
        with contextlib.suppress(JobExists):
            await record_submitted(self.events, self.index, message.task_id, data)

    # --- the worker's side ---

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        message.labels[DELIVERY_LABEL] = uuid.uuid4().hex
        ctx = TaskiqJobContext(
            self.events, message.task_id, attempt_of(message), min_interval_s=self.settings.progress_interval_s
        )
        run = self._runs[_run_key(message)] = _Run(ctx, message.labels.get(REQUEUE_LABEL))
        if self._observable(message):
            await self._guarded(self._start(message, run), "started", message)
        return message

    async def _start(self, message: TaskiqMessage, run: _Run) -> None:
        ctx = run.ctx
        try:
            try:
                appended = await self._append_started(ctx)
            except JobNotFound:
                if ctx.attempt > 1:
                    raise
                await self._submit(message)  # its producer did not record it (no middleware there, or no Redis)
                appended = await self._append_started(ctx)
        except (JobNotFound, TransitionRefused) as exc:
            run.cancelled = isinstance(exc, TransitionRefused) and exc.state == State.CANCELLED
            log.info("job %s: attempt %d not observed: %s", ctx.job_id, ctx.attempt, exc)
            return
        run.cancelled = appended.state == State.CANCELLED
        # A duplicate is a delivery again of a started attempt (its worker died, or the task
        # requeued itself): go on with it while it runs.
        ctx.observed = appended.state == State.RUNNING
        ctx.cancel_requested = appended.cancel_requested

    async def _append_started(self, ctx: TaskiqJobContext) -> Appended:
        data = StartedData(worker=f"{socket.gethostname()}:{os.getpid()}", attempt=ctx.attempt)
        return await self.events.append(
            ctx.job_id, EventType.STARTED, data, attempt=ctx.attempt, key=f"started:{ctx.attempt}"
        )

    async def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException) -> None:
        if isinstance(exception, JobCancelled | PermanentFailure | AttemptLost):
            disable_retry(message)
        run = self._runs.get(_run_key(message))
        if run is not None:
            run.ended = True
            await self._guarded(self._end(message, run, exception), "the outcome", message)

    async def _end(self, message: TaskiqMessage, run: _Run, exception: BaseException) -> None:
        ctx = run.ctx
        await ctx.close()  # before the outcome, so no held progress lands after it
        if not ctx.observed or isinstance(exception, AttemptLost):
            return
        if isinstance(exception, JobCancelled):
            await self._outcome(ctx, EventType.CANCELLED, ReasonData(reason=str(exception)[:2000]))
            return
        if isinstance(exception, NoResultError):
            if message.labels.get(REQUEUE_LABEL) == run.requeues:  # else the next delivery goes on with it
                await self._outcome(ctx, EventType.SUCCEEDED, SucceededData(result=None))
            return
        error = error_info(exception)
        delay = None if isinstance(exception, PermanentFailure) else retry_delay(self.broker, message, exception)
        if delay is None:
            await self._outcome(ctx, EventType.FAILED, FailedData(error=error))
        else:
            retrying = RetryingData(error=error, delay_s=delay, next_attempt=ctx.attempt + 1)
            await self._outcome(ctx, EventType.RETRYING, retrying, key=f"retrying:{ctx.attempt}")

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        run = self._runs.pop(_run_key(message), None)
        if run is not None and not run.ended:
            await self._guarded(self._succeed(run, result), "the outcome", message)

    async def _succeed(self, run: _Run, result: TaskiqResult[Any]) -> None:
        await run.ctx.close()
        if run.ctx.observed:
            await self._outcome(run.ctx, EventType.SUCCEEDED, SucceededData(result=result_of(result.return_value)))

    async def _outcome(self, ctx: TaskiqJobContext, event_type: EventType, data: Any, key: str | None = None) -> None:
        try:
            await self.events.append(ctx.job_id, event_type, data, attempt=ctx.attempt, key=key or event_type.value)
        except (TransitionRefused, JobNotFound) as exc:  # cancelled or deleted through the API meanwhile
            log.info("job %s: %s not written: %s", ctx.job_id, event_type, exc)

    # --- for job_context ---

    def context_for(self, message: TaskiqMessage) -> JobContext:
        """The context of the delivery running `message`; JobCancelled if its job was cancelled before it."""
        run = self._runs.get(_run_key(message))
        if run is None:
            raise RuntimeError(f"task {message.task_id} is not being run by a worker of this broker")
        if run.cancelled:
            raise JobCancelled(f"job {message.task_id} was cancelled before this attempt started")
        return run.ctx

    # --- helpers ---

    def _observable(self, message: TaskiqMessage) -> bool:
        if JOB_ID_RE.match(message.task_id):
            return True
        log.warning("task id %r cannot be a jobtrail job id (letters, digits, `_.-`); not observed", message.task_id)
        return False

    async def _guarded(self, step: Awaitable[T], what: str, message: TaskiqMessage) -> T | None:
        """Run one step of recording; a failure is logged, never raised into the user's task."""
        try:
            return await step
        except RedisError as exc:
            log.warning("job %s (%s): %s not recorded, Redis failed: %s", message.task_id, message.task_name, what, exc)
        except Exception:  # a bug here must not fail the user's task either
            log.exception("job %s (%s): %s not recorded", message.task_id, message.task_name, what)
        return None


def _run_key(message: TaskiqMessage) -> str:
    return str(message.labels.get(DELIVERY_LABEL, ""))


def job_context(context: Context = TaskiqDepends()) -> JobContext:
    """The running task's JobContext: `ctx: JobContext = TaskiqDepends(job_context)`.

    Raises JobCancelled, so the task does not start, when its job was cancelled while
    it waited in the queue.
    """
    middleware = next((m for m in context.broker.middlewares if isinstance(m, JobtrailMiddleware)), None)
    if middleware is None:
        raise RuntimeError("job_context needs JobtrailMiddleware among the broker's middlewares")
    return middleware.context_for(context.message)

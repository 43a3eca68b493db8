"""`jobtrail worker`: a process that consumes the broker's queue and runs jobs.

SIGTERM or SIGINT drains it: it stops reading the queue, lets its running jobs finish for
up to `shutdown_timeout_s`, then interrupts the rest, which the runner hands to the next
worker at once, and puts back the messages it read but never started. A second signal
stops the waiting: running jobs are handed off right away.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq.api import run_receiver_task

from jobtrail.config import Settings
from jobtrail.metrics_listener import MetricsListener
from jobtrail.services import Services, open_services
from jobtrail.workers.broker import JobBroker, register_runner
from jobtrail.workers.kinds_loader import load_kinds
from jobtrail.workers.queue import JobQueue
from jobtrail.workers.reaper import Reaper
from jobtrail.workers.runner import Runner

log = logging.getLogger(__name__)

# More than one worker can hold unacknowledged: its running jobs and a read's messages not started.
HAND_BACK_MAX = 1000

# taskiq's receiver logs this at INFO for every message it runs.
_PER_MESSAGE = "Executing task %s with ID: %s"


def quiet_taskiq() -> None:
    """Drop taskiq's line per message unless its logger is at DEBUG (once per process: tests run several workers).

    It names taskiq's message id, not the job, and a line per job (formatted, written and
    flushed) cost a busy worker more CPU than the broker's read of that job. The job's own
    history says when it started and where; taskiq's start-up and error lines stay. Dropped
    in the logger's `info` itself, before a record is made: a filter sees the record only
    after it was built, which alone cost about 3 % of a worker's CPU per trivial job.
    """
    receiver_log = logging.getLogger("taskiq.receiver.receiver")
    if "info" in vars(receiver_log):
        return
    info = receiver_log.info

    def quiet_info(msg: object, *args: object, **kwargs: Any) -> None:
        if msg == _PER_MESSAGE and not receiver_log.isEnabledFor(logging.DEBUG):
            return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the line is taskiq's, not this wrapper's
        info(msg, *args, **kwargs)

    receiver_log.info = quiet_info  # type: ignore[method-assign]


async def run_worker(settings: Settings) -> None:
    """Consume jobs until SIGTERM or SIGINT, then drain."""
    if settings.embedded:
        raise SystemExit("jobtrail worker needs REDIS_URL: the embedded mode runs its worker inside `jobtrail serve`")
    # First of all: a SIGTERM while the worker starts (an orchestrator scaling down, a
    # deploy) must be a clean stop, not death by the default handler. Once started, a
    # stop already asked for drains at once: there is nothing to drain.
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    quiet_taskiq()
    load_kinds(settings)  # before Redis: a module that fails to import stops the worker at once
    services = open_services(settings, role="worker")
    redis, keys, events, broker = services.redis, services.keys, services.events, services.broker
    assert isinstance(broker, JobBroker)  # the other broker is the embedded one, refused above
    requeue = services.enqueue
    runner = Runner(events, settings, requeue=requeue)
    register_runner(broker, runner)
    try:
        await redis.ping()  # fail at start, loudly, when Redis is not there
    except RedisError as exc:
        await services.aclose()
        # The error names host and port; the URL itself may hold a password.
        raise SystemExit(f"jobtrail worker: cannot reach Redis ({exc}); check REDIS_URL and that Redis runs") from None
    listener = await start_metrics(settings, services, runner.name)
    await broker.startup()
    receiver = asyncio.create_task(
        run_receiver_task(broker, max_async_tasks=settings.worker_concurrency, run_startup=False)
    )
    reaper = Reaper(events, requeue, settings, group=broker.consumer_group_name, name=runner.name)
    reaping = asyncio.create_task(reaper.run())
    log.info("worker %s consuming %s (concurrency %d)", runner.name, keys.queue(), settings.worker_concurrency)
    clean = False
    try:
        await stop.wait()
        log.info("worker %s stopping: no new jobs; %d running", runner.name, len(runner.deliveries))
        # Cancelling the receiver stops its reads only: taskiq runs each delivery in a task of its own.
        await cancel(receiver, reaping)
        clean = await drain(runner, settings, hurry)
        await hand_back_unstarted(broker, redis)
    finally:
        await cancel(receiver, reaping)
        await broker.shutdown()
        await services.aclose()
        if listener is not None:
            listener.stop()
    if not clean:
        raise SystemExit(1)


async def start_metrics(settings: Settings, services: Services, name: str) -> MetricsListener | None:
    """The worker's metrics listener, when `metrics_port` asks for one; a port in use stops the worker."""
    if not settings.metrics_port:
        return None
    listener = MetricsListener(services.metrics, settings.host, settings.metrics_port)
    try:
        listener.start()
    except OSError as exc:
        await services.aclose()
        raise SystemExit(
            f"jobtrail worker: cannot serve metrics on {settings.host}:{settings.metrics_port} ({exc})"
        ) from None
    log.info("worker %s: metrics on http://%s:%d/metrics", name, settings.host, listener.port)
    return listener


async def drain(runner: Runner, settings: Settings, hurry: asyncio.Event) -> bool:
    """Let running jobs finish, then hand off the rest, then send their derived writes; False if some did not end."""
    try:
        return await _drain(runner, settings, hurry)
    finally:
        await runner.trailer.flush()


async def _drain(runner: Runner, settings: Settings, hurry: asyncio.Event) -> bool:
    if await finished(runner.deliveries, settings.shutdown_timeout_s, hurry):
        return True
    log.warning("worker %s: %d job(s) still running; handing them to other workers", runner.name,
                len(runner.deliveries))
    runner.interrupt()
    # A hand-off is a few round trips, each bounded by the Redis timeout.
    if await finished(runner.deliveries, settings.redis_timeout_s):
        return True
    log.error("worker %s: %d job(s) not handed off; their leases expire and the reaper queues them again",
              runner.name, len(runner.deliveries))
    return False


async def finished(tasks: set[asyncio.Task[Any]], timeout_s: float, hurry: asyncio.Event | None = None) -> bool:
    """Wait until `tasks` are all done (True), or until `timeout_s` passes or `hurry` is set."""
    waited = set(tasks)
    if not waited:
        return True
    waiting: list[asyncio.Future[Any]] = [asyncio.ensure_future(asyncio.wait(waited))]
    if hurry is not None:
        waiting.append(asyncio.ensure_future(hurry.wait()))
    try:
        await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel(*waiting)
    return all(task.done() for task in waited)


async def hand_back_unstarted(broker: JobBroker, redis: Redis) -> None:
    """Put back on the queue the messages this worker read but never ran, and acknowledge them.

    A read cut short by the drain may have taken some (a read takes one per free slot).
    taskiq-redis would leave them with this consumer until another worker claims them
    after JOBTRAIL_BROKER_IDLE_MS. The acks still queued go first: a message whose job
    finished is not handed back.
    """
    queue = JobQueue(redis, broker.queue_name, broker.consumer_group_name)
    try:
        await broker.flush_acks()
        handed_back = await queue.hand_back(broker.consumer_name, HAND_BACK_MAX)
    except RedisError as exc:
        log.warning("could not put unstarted messages back on the queue (%s); the reaper will", exc)
        return
    if handed_back:
        log.info("put %d message(s) read but not started back on the queue", handed_back)


async def cancel(*tasks: asyncio.Future[Any], timeout_s: float = 5.0) -> bool:
    """Cancel `tasks` and wait for them, at most `timeout_s`; True if they all ended.

    The cancellation is asked for again every 0.2 s: a task blocked in redis-py can lose
    one that lands while it reconnects (and Python 3.11's wait_for can lose one too), and
    a stopping worker must not hang on it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
    if pending:
        log.warning("%d task(s) did not stop within %.0f s; going on without them", len(pending), timeout_s)
    return not pending

"""`jobtrail worker`: a process that consumes the broker's queue and runs jobs."""

from __future__ import annotations

import asyncio
import logging
import signal

from redis.exceptions import RedisError
from taskiq.api import run_receiver_task

from app.config import Settings
from app.eventlog import EventLog
from app.keys import Keys
from app.store import Store
from workers.broker import build_broker, register_runner
from workers.runner import Runner

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> None:
    """Consume jobs until SIGTERM or SIGINT."""
    if settings.embedded:
        raise SystemExit("jobtrail worker needs REDIS_URL: the embedded mode runs its worker inside `jobtrail serve`")
    keys = Keys(settings.prefix)
    redis = Store(settings, role="worker").pooled()
    runner = Runner(EventLog(redis, keys, settings.retention_s, activity_maxlen=settings.activity_maxlen), settings)
    broker = build_broker(settings, keys)
    register_runner(broker, runner)
    try:
        await redis.ping()  # fail at start, loudly, when Redis is not there
    except RedisError as exc:
        await redis.aclose()
        # The error names host and port; the URL itself may hold a password.
        raise SystemExit(f"jobtrail worker: cannot reach Redis ({exc}); check REDIS_URL and that Redis runs") from None
    await broker.startup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    receiver = asyncio.create_task(
        run_receiver_task(broker, max_async_tasks=settings.worker_concurrency, run_startup=False)
    )
    log.info("worker %s consuming %s (concurrency %d)", runner.name, keys.queue(), settings.worker_concurrency)
    try:
        await stop.wait()
    finally:
        log.info("worker %s stopping", runner.name)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await broker.shutdown()
        await redis.aclose()

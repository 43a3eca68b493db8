"""The `jobtrail` command: serve, worker, repair, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from app.config import Settings

EMBEDDED_BANNER = """
  ============================================================================
   jobtrail is running EMBEDDED: no REDIS_URL is set, so the API, the worker
   and an in-memory Redis stand-in share this one process. NOTHING IS KEPT:
   every job is gone when it stops. Set REDIS_URL to run it for real.
  ============================================================================
"""


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.app import create_app

    if settings.embedded:
        print(EMBEDDED_BANNER, file=sys.stderr, flush=True)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    return 0


def _worker(settings: Settings, _: argparse.Namespace) -> int:
    from workers.worker import run_worker

    asyncio.run(run_worker(settings))
    return 0


def _repair(settings: Settings, args: argparse.Namespace) -> int:
    from app.repair import repair

    return asyncio.run(repair(settings, args.job_ids, check=args.check))


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from migrations.command import main as migrate

    return asyncio.run(migrate(settings, status=args.status, dry_run=args.dry_run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobtrail", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (embedded: with a worker, on in-memory Redis)")
    serve.add_argument("--host", help="bind address (default JOBTRAIL_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default JOBTRAIL_PORT or 8000)")
    serve.set_defaults(run=_serve)
    worker = commands.add_parser("worker", help="run a worker that executes queued jobs (needs REDIS_URL)")
    worker.set_defaults(run=_worker)
    repair = commands.add_parser("repair", help="rebuild job state hashes from their event streams")
    repair.add_argument("job_ids", nargs="*", metavar="ID", help="jobs to repair (default: every job)")
    repair.add_argument("--check", action="store_true", help="only report mismatches; exit 1 if any")
    repair.set_defaults(run=_repair)
    migrate = commands.add_parser("migrate", help="apply pending data migrations (e.g. import legacy job keys)")
    migrate.add_argument("--status", action="store_true", help="list the migrations and whether each is applied")
    migrate.add_argument("--dry-run", action="store_true", help="report what would be done; write nothing")
    migrate.set_defaults(run=_migrate)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    return args.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())

"""The `jobtrail` command: serve, worker, repair, migrate, keys, watch, submit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator

import msgspec

from jobtrail.client.cli import add_commands as add_client_commands
from jobtrail.config import Settings
from jobtrail.workers.kinds_loader import KindsLoadError

EMBEDDED_BANNER = """
  ============================================================================
   jobtrail is running EMBEDDED: no REDIS_URL is set, so the API, the worker
   and an in-memory Redis stand-in share this one process. NOTHING IS KEPT:
   every job is gone when it stops. Set REDIS_URL to run it for real.
   {artifacts}
  ============================================================================
"""


OPEN_BANNER = """
  ============================================================================
   jobtrail is running OPEN: no API keys are configured, so anyone who can
   reach this port can submit, read and delete every job. Set
   JOBTRAIL_API_KEYS (`jobtrail keys new TENANT` makes one) to require keys.
  ============================================================================
"""


@contextlib.contextmanager
def _embedded_artifacts(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """The settings `serve` runs with, and the banner's line about export files.

    Embedded, nothing is kept, so export files too go to a temporary directory that is
    removed when `serve` returns (after SIGINT or SIGTERM; a SIGKILL leaves it to the
    system's temporary-file cleanup). A JOBTRAIL_ARTIFACT_DIR set on purpose is kept,
    and the banner says where it is.
    """
    # Set or not is the environment's to say: the setting's default is a folder too.
    if "JOBTRAIL_ARTIFACT_DIR" in os.environ:
        yield settings, f"Export files are KEPT in {os.path.abspath(settings.artifact_dir)}."
        return
    with tempfile.TemporaryDirectory(prefix="jobtrail-artifacts-") as folder:
        yield msgspec.structs.replace(settings, artifact_dir=folder), f"Export files: {folder} (removed at exit)."


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that `with` blocks clean up on the way out."""


def _terminated(sig: int, frame: object) -> None:
    raise _Terminated


def _stopped_while_starting(sig: int, frame: object) -> None:
    # A worker told to stop while it still imports (taskiq, redis, its kinds) has read
    # nothing and holds nothing: a clean stop, not death by the default handler. Its
    # event loop's own handler (workers/worker.py) takes over once it runs.
    raise SystemExit(0)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.embedded:
        return _run_server(settings, args, "")
    # uvicorn stops on SIGTERM, then raises it again under the handler it found; with the
    # default one that kills the process before the temporary directory is removed.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        with _embedded_artifacts(settings) as (embedded, artifacts_line):
            return _run_server(embedded, args, artifacts_line)
    except _Terminated:
        # Cleaned up; now end as SIGTERM would have, so the exit status still says so.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        return 128 + signal.SIGTERM


def _run_server(settings: Settings, args: argparse.Namespace, artifacts_line: str) -> int:
    import uvicorn

    from jobtrail import eventloop, gcpolicy
    from jobtrail.api.app import create_app
    from jobtrail.api.protocol import protocol_class
    from jobtrail.auth import ApiKeys, ConfigError, auth_enabled
    from jobtrail.services import open_services

    services = open_services(settings, role="api")
    try:
        app = create_app(settings, services)
        secured = auth_enabled(settings, ApiKeys.from_settings(settings))
    except ConfigError as exc:
        print(f"jobtrail serve: {exc}", file=sys.stderr)
        return 2
    if settings.embedded:
        print(EMBEDDED_BANNER.format(artifacts=artifacts_line), file=sys.stderr, flush=True)
    if not secured:
        print(OPEN_BANNER, file=sys.stderr, flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Open SSE streams would hold the shutdown until its timeout and then be
            # cut; ended first, they finish cleanly and their clients resume elsewhere.
            if not self.should_exit:
                asyncio.get_running_loop().call_soon_threadsafe(services.hub.drain)
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

        def run(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn's own `loop=` would pick uvloop by whether it is installed; this is the setting's.
            eventloop.run(self.serve(sockets=sockets), settings)

    config = uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
        # app/api/requests.py logs each request with its id, and without the token a
        # query string may carry; uvicorn's access log would print it.
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        # httptools (or h11, JOBTRAIL_HTTP): uvicorn answers a request it cannot parse in
        # plain text, these in JSON, and bound the request head alike.
        http=protocol_class(settings),
        # /ws keep-alive: a peer that does not answer a ping within the interval is dropped.
        ws_ping_interval=settings.ws_ping_s,
        ws_ping_timeout=settings.ws_ping_s,
        # A frame past JOBTRAIL_WS_MAX_MESSAGE_BYTES gets an error frame (app/api/ws_session.py);
        # uvicorn drops the connection (1009) only for one far larger, before reading it whole.
        ws_max_size=max(1 << 20, 16 * settings.ws_max_message_bytes),
    )
    # Everything imported and built: frozen out of the collector's full passes (app/gcpolicy.py).
    gcpolicy.settle()
    Server(config).run()
    return 0


def _worker(settings: Settings, _: argparse.Namespace) -> int:
    from jobtrail import eventloop
    from jobtrail.workers.worker import run_worker

    eventloop.run(run_worker(settings), settings)
    return 0


def _repair(settings: Settings, args: argparse.Namespace) -> int:
    from jobtrail.repair import repair

    return asyncio.run(repair(settings, args.job_ids, check=args.check))


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from jobtrail.migrations.command import main as migrate

    return asyncio.run(migrate(settings, status=args.status, dry_run=args.dry_run))


def _keys_new(_: Settings, args: argparse.Namespace) -> int:
    from jobtrail.auth import TENANT_RE, hash_key, new_key

    if not (args.tenant == "*" or TENANT_RE.match(args.tenant)):
        print("jobtrail keys new: a tenant is letters, digits and `_.-` (or `*` for an admin key)", file=sys.stderr)
        return 2
    key = new_key()
    print(f"key (give it to the client; it is not stored anywhere):\n  {key}")
    print(f"entry (add it to JOBTRAIL_API_KEYS or JOBTRAIL_API_KEYS_FILE):\n  {args.tenant}:{hash_key(key)}")
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobtrail", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (embedded: with a worker, on in-memory Redis)")
    serve.add_argument("--host", help="bind address (default JOBTRAIL_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default JOBTRAIL_PORT or 8000)")
    serve.set_defaults(run=_serve)
    worker = commands.add_parser("worker", help="run a worker that executes queued jobs (needs REDIS_URL)")
    worker.add_argument("--metrics-port", type=_port, metavar="N",
                        help="serve Prometheus metrics on port N of JOBTRAIL_HOST (default JOBTRAIL_METRICS_PORT)")
    worker.set_defaults(run=_worker)
    for command in (serve, worker):
        command.add_argument("--kinds", metavar="MODULES",
                             help="modules of job kinds to import, comma-separated (default JOBTRAIL_KINDS)")
    repair = commands.add_parser("repair", help="rebuild job state hashes from their event streams")
    repair.add_argument("job_ids", nargs="*", metavar="ID", help="jobs to repair (default: every job)")
    repair.add_argument("--check", action="store_true", help="only report mismatches; exit 1 if any")
    repair.set_defaults(run=_repair)
    migrate = commands.add_parser("migrate", help="apply pending data migrations (e.g. import legacy job keys)")
    migrate.add_argument("--status", action="store_true", help="list the migrations and whether each is applied")
    migrate.add_argument("--dry-run", action="store_true", help="report what would be done; write nothing")
    migrate.set_defaults(run=_migrate)
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    keys_new = keys.add_parser("new", help="make a key for a tenant and print it with its hashed config entry")
    keys_new.add_argument("tenant", help="the tenant the key acts for; `*` makes an admin key")
    keys_new.set_defaults(run=_keys_new)
    add_client_commands(commands)
    args = parser.parse_args(argv)
    if args.run is _worker:
        signal.signal(signal.SIGTERM, _stopped_while_starting)
    if getattr(args, "standalone", False):
        return int(args.run(args))  # a client of an API: no server settings, no server logging
    _configure_logging()
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    if getattr(args, "kinds", None) is not None:
        settings = msgspec.structs.replace(settings, kinds=args.kinds)
    if getattr(args, "metrics_port", None) is not None:
        settings = msgspec.structs.replace(settings, metrics_port=args.metrics_port)
    try:
        return args.run(settings, args)
    except KindsLoadError as exc:
        # The first line says which module; the traceback below it says where in it.
        print(f"jobtrail {args.command}: {exc.report()}", file=sys.stderr)
        return 1


def _configure_logging() -> None:
    from jobtrail.api.requests import RedactingFilter, RequestIdFilter, SecondFormatter

    # The format names none of the caller's file and line, thread or process: not looked up
    # for every record (the logging HOWTO's "Optimization"), the access log writes one per request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(SecondFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


if __name__ == "__main__":
    sys.exit(main())

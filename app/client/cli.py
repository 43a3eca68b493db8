"""`jobtrail watch` and `jobtrail submit`: the command line on the Python client.

They talk to an API over HTTP and need no server setting: `--url` (or JOBTRAIL_URL)
and `--key` (or JOBTRAIL_API_KEY) are all. `app/cli.py` adds them with
`add_commands`, which imports nothing heavy: rich and httpx load when one runs.

Exit codes: 0 the job succeeded, 1 failed, 2 cancelled, 3 no such job, 4 the key was
refused, 5 any other error (the API unreachable, params refused, bad input); 130 on
Ctrl-C. (argparse's own usage errors exit 2 as everywhere.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def add_commands(commands: Any) -> None:
    """Add `watch` and `submit` to the `jobtrail` subcommands (an argparse subparsers action)."""
    watch = commands.add_parser("watch", help="follow a job with a live progress bar (exit 0 succeeded, "
                                "1 failed, 2 cancelled)")
    watch.add_argument("job_id", metavar="ID", help="the job to follow")
    _connection(watch)
    watch.set_defaults(run=_watch, standalone=True)

    submit = commands.add_parser("submit", help="submit a job and print its id (or watch it)")
    submit.add_argument("kind", metavar="KIND", help="the job's kind, e.g. demo")
    submit.add_argument("--params", default="{}", help="the params, a JSON object (default {})")
    submit.add_argument("--watch", action="store_true", help="follow the job as `jobtrail watch` does")
    submit.add_argument("--idempotency-key", help="a repeat with the same key returns the same job")
    submit.add_argument("--max-attempts", type=int, help="attempts before the job fails (default: the API's)")
    _connection(submit)
    submit.set_defaults(run=_submit, standalone=True)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("JOBTRAIL_URL") or DEFAULT_URL,
                        help=f"the API's base URL (default JOBTRAIL_URL or {DEFAULT_URL})")
    parser.add_argument("--key", default=os.environ.get("JOBTRAIL_API_KEY") or None,
                        help="an API key (default JOBTRAIL_API_KEY)")


def _watch(args: argparse.Namespace) -> int:
    return _guarded(args, lambda client, console: _follow(client, args.job_id, console))


def _submit(args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        params = exc
    if not isinstance(params, dict):
        print(f"jobtrail submit: --params must be a JSON object ({params})", file=sys.stderr)
        return 5

    def run(client: Any, console: Any) -> int:
        job = client.submit(args.kind, params, idempotency_key=args.idempotency_key, max_attempts=args.max_attempts)
        print(job.id, flush=True)
        return _follow(client, job.id, console) if args.watch else 0

    return _guarded(args, run)


def _follow(client: Any, job_id: str, console: Any) -> int:
    from jobtrail.client.watch import watch

    return watch(client, job_id, console)


def _guarded(args: argparse.Namespace, run: Any) -> int:
    """Run with a client and a console; turn the client's errors into one line and an exit code."""
    from rich.console import Console

    from jobtrail.client.errors import ClientError, JobNotFound, Unauthorized
    from jobtrail.client.sync import Client
    from jobtrail.client.watch import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_UNAUTHORIZED

    command = f"jobtrail {args.command}"
    try:
        with Client(args.url, args.key) as client:
            return int(run(client, Console()))
    except JobNotFound as exc:
        print(f"{command}: {exc.detail}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except Unauthorized as exc:
        print(f"{command}: {exc.detail} (pass --key or set JOBTRAIL_API_KEY)", file=sys.stderr)
        return EXIT_UNAUTHORIZED
    except ClientError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130

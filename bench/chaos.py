"""Chaos run: real workers SIGKILLed at random points while SSE clients drop and resume.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python -m bench.chaos --jobs 100 --workers 3 --seed 1

(any REDIS_URL: `redis+sentinel://…` and `redis+cluster://…` too, see the README's "Scaling out")

(from the repository's root: bench/ and tests/ are packages, and their imports need no path edits.)

Starts `jobtrail serve` and W `jobtrail worker` processes under a fresh key prefix, submits
N demo jobs of varied length (some fail and retry, some are cancelled) through the REST
API, follows a share of them with SSE clients that disconnect at random points and resume
with Last-Event-ID, and meanwhile SIGKILLs (and SIGTERMs) busy workers, starting a
replacement for each; `--pauses` also freezes some (SIGSTOP) until their leases have
expired, then lets them go on (SIGCONT). Once every job is terminal (or the deadline passed) it checks, with
direct Redis reads:

- stuck: every job is terminal;
- duplicates: no two events of a stream share an idempotency `key`; at most one `started`
  per attempt; exactly one terminal event (hence at most one `succeeded`), and it is last;
- stale: attempts run 1, 2, 3… and every other event carries the attempt running when it
  was written (a worker that lost its job must not write into the next attempt);
- the state hash equals the fold of the stream (app/reducer.py);
- lost: every job submitted has its stream, and each SSE client's events, concatenated
  over its reconnects, are the job's stream exactly (same ids and bodies, in order, no
  gap, no repeat); a reconnect after the terminal event answers 204.

It prints the figures, deletes the prefix's keys, and exits 1 on any violation.
tests/chaos/test_chaos.py runs a short version of the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import msgspec
import redis.asyncio as aioredis

from jobtrail.config import Settings
from jobtrail.events import Event, EventOut, EventType
from jobtrail.jobstate import state_fields
from jobtrail.keys import Keys
from jobtrail.reducer import IllegalHistory, fold
from jobtrail.store import Store
from tests.support.sse import Message, messages

ROOT = Path(__file__).resolve().parent.parent  # where the processes it starts run

log = logging.getLogger("chaos")

TERMINAL = {"succeeded", "failed", "cancelled"}
_decode_event = msgspec.json.Decoder(EventOut).decode


class ChaosConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One chaos run. Times in seconds; `(low, high)` pairs are uniform ranges."""

    redis_url: str
    jobs: int = 100
    workers: int = 3
    seed: int = 1
    kills: int = 12
    terms: int = 3
    pauses: int = 0  # SIGSTOPs, each held until the lease has expired and the reaper ran, then SIGCONT
    signal_every_s: float = 2.0  # mean gap between two signals
    submit_over_s: float = 20.0
    sse_share: float = 0.5
    fail_share: float = 0.15
    cancel_share: float = 0.05
    steps: tuple[int, int] = (8, 30)
    delay_ms: tuple[int, int] = (100, 300)
    max_attempts: int = 5  # of a job not asked to fail: kills use up attempts too
    concurrency: int = 10
    lease_ttl_s: float = 3.0
    reaper_interval_s: float = 1.0
    pending_stale_s: float = 6.0
    shutdown_timeout_s: float = 3.0
    deadline_s: float = 300.0  # for every job to end, from the first submission
    prefix: str = ""  # empty: a fresh one
    run_dir: str = ""  # process logs; empty: a temporary directory, kept only on failure


class ChaosReport(msgspec.Struct, kw_only=True):
    """The figures of a run; `violations` says what broke, empty when nothing did."""

    jobs: int
    workers: int
    seed: int
    outcomes: dict[str, int]
    kills: int
    terms: int
    pauses: int
    workers_started: int
    interrupted: int  # jobs whose lease a SIGKILLed worker held
    sse_clients: int
    reconnected: int  # clients that connected more than once
    reconnects: int
    stream_events: int
    sse_events: int
    lost: int
    duplicates: int
    stale: int
    mismatched: int
    stuck: int
    recovery_s: list[float]
    wall_s: float
    run_dir: str
    violations: list[str]


# --- the plan: every random choice about jobs and their clients, drawn from the seed ---


class Cut(msgspec.Struct, frozen=True):
    """A planned disconnect: after `events` events or `seconds`, whichever comes first."""

    events: int
    seconds: float
    pause_s: float  # before reconnecting


class JobPlan(msgspec.Struct, frozen=True, kw_only=True):
    submit_at_s: float
    params: dict[str, int]
    max_attempts: int
    cancel_after_s: float | None  # after submitting; None: never
    watch_after_s: float | None  # when an SSE client connects; None: no client
    cuts: tuple[Cut, ...]


def plan_jobs(config: ChaosConfig) -> list[JobPlan]:
    rng = random.Random(f"chaos-plan-{config.seed}")
    plans = []
    for n in range(config.jobs):
        steps = rng.randint(*config.steps)
        params = {"steps": steps, "delay_ms": rng.randint(*config.delay_ms)}
        max_attempts = config.max_attempts
        if rng.random() < config.fail_share:
            params["fail_at_step"] = rng.randint(1, steps)
            max_attempts = rng.randint(1, 3)
        cancel = rng.uniform(0.5, 6.0) if rng.random() < config.cancel_share else None
        watch = rng.uniform(0.0, 2.0) if rng.random() < config.sse_share else None
        cuts = tuple(
            Cut(rng.randint(1, 15), rng.uniform(0.3, 4.0), rng.uniform(0.0, 1.0)) for _ in range(rng.randint(1, 4))
        )
        plans.append(JobPlan(
            submit_at_s=config.submit_over_s * n / config.jobs, params=params, max_attempts=max_attempts,
            cancel_after_s=cancel, watch_after_s=watch, cuts=cuts if watch is not None else (),
        ))
    return plans


# --- processes ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(config: ChaosConfig, prefix: str, run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
    env.update(
        REDIS_URL=config.redis_url,
        JOBTRAIL_PREFIX=prefix,
        JOBTRAIL_AUTH="off",
        JOBTRAIL_ARTIFACT_DIR=str(run_dir / "artifacts"),
        JOBTRAIL_WORKER_CONCURRENCY=str(config.concurrency),
        JOBTRAIL_LEASE_TTL_S=str(config.lease_ttl_s),
        JOBTRAIL_REAPER_INTERVAL_S=str(config.reaper_interval_s),
        JOBTRAIL_PENDING_STALE_S=str(config.pending_stale_s),
        JOBTRAIL_SHUTDOWN_TIMEOUT_S=str(config.shutdown_timeout_s),
        JOBTRAIL_RETRY_BASE_S="0.5",
        JOBTRAIL_RETRY_MAX_S="2",
        JOBTRAIL_SSE_PING_S="2",
        PYTHONUNBUFFERED="1",
    )
    return env


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class Processes:
    """The `jobtrail serve` and `jobtrail worker` processes of one run, logging into run_dir."""

    def __init__(self, env: dict[str, str], run_dir: Path) -> None:
        self.env = env
        self.run_dir = run_dir
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []  # running and not signalled
        self.stopping: list[tuple[subprocess.Popen[bytes], float]] = []  # SIGTERMed, and when
        self.started = 0
        self._log_names: dict[int, str] = {}  # a worker's pid -> its log's name

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.log_path(name), "wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "jobtrail.cli", *args],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )

    async def start_api(self) -> str:
        """Serve on a free port; the base URL once /readyz answers."""
        port = free_port()
        self.api = self._spawn("api", "serve", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            for _ in range(300):
                if self.api.poll() is not None:
                    raise RuntimeError(f"jobtrail serve exited:\n{tail(self.log_path('api'))}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"jobtrail serve never became ready:\n{tail(self.log_path('api'))}")

    def start_worker(self) -> str:
        """Start one more worker; the name of its log."""
        name = f"worker-{self.started}"
        process = self._spawn(name, "worker")
        self.workers.append(process)
        self._log_names[process.pid] = name
        self.started += 1
        return name

    def listening(self, process: subprocess.Popen[bytes]) -> bool:
        """The worker consumes the queue (taskiq logged "Listening started"): it is past its start-up."""
        return b"Listening started" in self.log_path(self._log_names[process.pid]).read_bytes()

    async def start_workers(self, count: int, timeout: float = 30.0) -> None:
        """Start workers and wait until each consumes the queue (taskiq logs "Listening started")."""
        names = [self.start_worker() for _ in range(count)]
        deadline = time.monotonic() + timeout
        for name, process in zip(names, self.workers, strict=False):
            while b"Listening started" not in self.log_path(name).read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} never listened:\n{tail(self.log_path(name))}")
                await asyncio.sleep(0.1)

    async def kill(self, process: subprocess.Popen[bytes]) -> None:
        self.workers.remove(process)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)

    def term(self, process: subprocess.Popen[bytes]) -> None:
        self.workers.remove(process)
        process.send_signal(signal.SIGTERM)
        self.stopping.append((process, time.monotonic()))

    async def pause(self, process: subprocess.Popen[bytes], seconds: float) -> None:
        """Freeze a worker (as a long GC pause or a stalled VM would), then let it go on."""
        self.workers.remove(process)
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            process.send_signal(signal.SIGCONT)
            self.workers.append(process)

    async def check_stopped(self, grace_s: float) -> list[str]:
        """Violations of SIGTERMed workers that did not exit, cleanly, within `grace_s`."""
        problems = []
        for process, since in self.stopping:
            try:
                code = await asyncio.to_thread(process.wait, max(since + grace_s - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                problems.append(f"worker {process.pid} still ran {grace_s:.0f} s after SIGTERM")
                continue
            if code != 0:
                problems.append(f"worker {process.pid} exited with {code} after SIGTERM")
        return problems

    async def stop(self) -> None:
        """SIGTERM everything still running, SIGKILL what outlives 15 s."""
        running = [p for p in [*self.workers, *(p for p, _ in self.stopping), self.api] if p and p.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


def worker_name(process: subprocess.Popen[bytes]) -> str:
    """The name the worker's runner writes into its leases and `started` events (workers/runner.py)."""
    return f"{socket.gethostname()}:{process.pid}"


# --- SSE clients ---


class Received(msgspec.Struct, frozen=True):
    id: str | None  # the `id:` line
    event: str  # the `event:` line
    body: EventOut | None  # the `data:` line as a job event; None when it is not one (a gap)


class ClientLog(msgspec.Struct, kw_only=True):
    """What one SSE client received, over all its connections."""

    job_id: str
    received: list[Received] = msgspec.field(default_factory=list)
    connections: int = 0
    finished: bool = False  # the terminal event arrived
    done_answer: int | None = None  # status of a reconnect after the terminal event (204 expected)
    errors: list[str] = msgspec.field(default_factory=list)

    @property
    def last_id(self) -> str | None:
        return next((r.id for r in reversed(self.received) if r.id), None)


def as_received(message: Message) -> Received:
    try:
        body = None if message.event == "gap" else _decode_event(message.data)
    except msgspec.MsgspecError:
        body = None
    return Received(id=message.id, event=message.event, body=body)


async def connect_once(http: httpx.AsyncClient, client: ClientLog, cut: Cut | None, deadline: float) -> None:
    """One connection from the client's last id, read until the job ends, the cut, or the deadline."""
    last = client.last_id
    headers = {"Last-Event-ID": last} if last else {}
    client.connections += 1
    seconds = min(cut.seconds if cut else float("inf"), deadline - time.monotonic())
    count = 0
    try:
        async with asyncio.timeout(seconds):
            async with http.stream("GET", f"/jobs/{client.job_id}/events", headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    client.errors.append(f"GET events from {last}: {response.status_code} {response.text[:200]}")
                    return
                async for message in messages(response):
                    if not message.data:
                        continue  # the retry hint, pings
                    client.received.append(as_received(message))
                    if message.event in TERMINAL:
                        client.finished = True
                        return
                    count += 1
                    if cut is not None and count >= cut.events:
                        return
    except TimeoutError:
        return
    except httpx.HTTPError as exc:
        client.errors.append(f"GET events from {last}: {type(exc).__name__}: {exc}")


async def follow(http: httpx.AsyncClient, job_id: str, plan: JobPlan, deadline: float) -> ClientLog:
    """Watch a job as a reconnecting EventSource would, dropping the connection at the planned cuts."""
    assert plan.watch_after_s is not None
    client = ClientLog(job_id=job_id)
    await asyncio.sleep(plan.watch_after_s)
    cuts = list(plan.cuts)
    while not client.finished and time.monotonic() < deadline and len(client.errors) < 5:
        cut = cuts.pop(0) if cuts else None
        errors = len(client.errors)
        await connect_once(http, client, cut, deadline)
        if not client.finished:
            # As an EventSource waits its retry delay: a server that closes at once is not hammered.
            await asyncio.sleep(1.0 if len(client.errors) > errors else cut.pause_s if cut else 0.5)
    if client.finished:
        try:
            response = await http.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": client.last_id or ""})
            client.done_answer = response.status_code
        except httpx.HTTPError as exc:
            client.errors.append(f"GET events after the end: {type(exc).__name__}: {exc}")
    return client


# --- the run ---


class Kill(msgspec.Struct, frozen=True):
    """One SIGKILL: when (epoch ms, the clock event `at`s use), whom, and the jobs it interrupted."""

    at_ms: int
    worker: str
    held: tuple[str, ...]  # jobs whose lease the worker held when it died


class Chaos:
    """One run in progress: submits, watches, cancels and signals, then hands over what happened."""

    def __init__(
        self, config: ChaosConfig, http: httpx.AsyncClient, redis: aioredis.Redis, keys: Keys, procs: Processes
    ) -> None:
        self.config = config
        self.http = http
        self.redis = redis
        self.keys = keys
        self.procs = procs
        self.job_ids: list[str] = []
        self.clients: list[ClientLog] = []
        self.kills: list[Kill] = []
        self.terms = 0
        self.pauses: list[asyncio.Task[None]] = []
        self.problems: list[str] = []
        self.over = False  # every job ended, or the deadline passed
        self.deadline = time.monotonic() + config.deadline_s

    async def run(self) -> None:
        plans = plan_jobs(self.config)
        lives = [asyncio.create_task(self._job_life(n, plan)) for n, plan in enumerate(plans)]
        signaller = asyncio.create_task(self._signal_workers())
        await self._wait_until_ended(len(plans))
        self.over = True
        await signaller
        await asyncio.gather(*self.pauses)
        # Clients end with their job's terminal event, or at the deadline.
        done, late = await asyncio.wait(lives, timeout=max(self.deadline - time.monotonic(), 0) + 30)
        for task in late:
            task.cancel()
            self.problems.append("a job's client or canceller was still busy 30 s after the deadline")
        await asyncio.gather(*late, return_exceptions=True)
        self.problems += [f"a job's client or canceller failed: {t.exception()!r}" for t in done if t.exception()]

    async def _job_life(self, n: int, plan: JobPlan) -> None:
        await asyncio.sleep(plan.submit_at_s)
        job_id = await self._submit(plan, n)
        if job_id is None:
            return
        tasks = []
        if plan.watch_after_s is not None:
            tasks.append(self._watch(job_id, plan))
        if plan.cancel_after_s is not None:
            tasks.append(self._cancel(job_id, plan.cancel_after_s))
        await asyncio.gather(*tasks)

    async def _submit(self, plan: JobPlan, n: int) -> str | None:
        body = {"kind": "demo", "params": plan.params, "max_attempts": plan.max_attempts}
        # The key makes a resent request return the same job instead of a second one.
        headers = {"Idempotency-Key": f"chaos-{n}"}
        for _ in range(5):
            try:
                response = await self.http.post("/jobs", json=body, headers=headers)
            except httpx.TransportError:
                await asyncio.sleep(1)
                continue
            if response.status_code in (200, 202):
                self.job_ids.append(response.json()["id"])
                return self.job_ids[-1]
            self.problems.append(f"submit answered {response.status_code}: {response.text[:200]}")
            return None
        self.problems.append("submit failed 5 times over")
        return None

    async def _watch(self, job_id: str, plan: JobPlan) -> None:
        self.clients.append(await follow(self.http, job_id, plan, self.deadline))

    async def _cancel(self, job_id: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        response = await self.http.post(f"/jobs/{job_id}/cancel", json={"reason": "chaos"})
        if response.status_code not in (202, 409):  # 409: it had already ended
            self.problems.append(f"cancel of {job_id} answered {response.status_code}: {response.text[:200]}")

    async def _wait_until_ended(self, count: int) -> None:
        while time.monotonic() < self.deadline:
            if len(self.job_ids) == count and not await self._live_jobs():
                return
            await asyncio.sleep(0.5)

    async def _live_jobs(self) -> list[str]:
        job_ids = list(self.job_ids)  # submissions go on meanwhile, adding to the list
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "state")
            states = await pipe.execute()
        return [job_id for job_id, state in zip(job_ids, states, strict=True) if state not in TERMINAL]

    async def _lease_holders(self, job_ids: list[str]) -> dict[str, str]:
        """Job id -> name of the worker holding its lease (the token is `<name>:<random>`)."""
        if not job_ids:
            return {}
        # One GET per key, pipelined: an MGET over many jobs' slots is cross-slot on a Cluster.
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.get(self.keys.lease(job_id))
            tokens = await pipe.execute()
        return {job_id: token.rpartition(":")[0] for job_id, token in zip(job_ids, tokens, strict=True) if token}

    async def _signal_workers(self) -> None:
        """SIGKILL, SIGTERM or pause a busy worker at random moments; replace each one killed or stopped."""
        config = self.config
        rng = random.Random(f"chaos-signals-{config.seed}")
        signals = [signal.SIGKILL] * config.kills + [signal.SIGTERM] * config.terms + [signal.SIGSTOP] * config.pauses
        rng.shuffle(signals)
        for sig in signals:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * config.signal_every_s)
            if self.over:
                return
            victim = await self._victim(rng)
            if victim is None:
                return
            await self._signal(sig, victim)
            log.info("%s %s; %d jobs submitted, %d live", sig.name, worker_name(victim), len(self.job_ids),
                     len(await self._live_jobs()))

    async def _victim(self, rng: random.Random) -> subprocess.Popen[bytes] | None:
        """A busy worker, else one that listens; None once the run is over.

        Never one still starting: until its interpreter has run the command's first lines
        it has no handler for SIGTERM, and the default ends it with -15 before it did
        anything, which no code of the worker's can change. While every worker is paused
        or starting, the signal waits.
        """
        while not self.over:
            busy = set((await self._lease_holders(await self._live_jobs())).values())
            candidates = ([p for p in self.procs.workers if worker_name(p) in busy]
                          or [p for p in self.procs.workers if self.procs.listening(p)])
            if candidates:
                return rng.choice(candidates)
            await asyncio.sleep(0.2)
        return None

    async def _signal(self, sig: signal.Signals, victim: subprocess.Popen[bytes]) -> None:
        if sig is signal.SIGSTOP:
            seconds = self.config.lease_ttl_s + 2 * self.config.reaper_interval_s + 2
            self.pauses.append(asyncio.create_task(self.procs.pause(victim, seconds)))
            return  # it comes back: no replacement
        if sig is signal.SIGKILL:
            at_ms = time.time_ns() // 1_000_000
            await self.procs.kill(victim)
            # The dead worker cannot release its leases: they name its jobs until they expire.
            held = await self._lease_holders(self.job_ids)
            name = worker_name(victim)
            self.kills.append(Kill(at_ms, name, tuple(j for j, w in held.items() if w == name)))
        else:
            self.procs.term(victim)
            self.terms += 1
        self.procs.start_worker()


# --- checks ---


class StreamCheck(msgspec.Struct, kw_only=True):
    lost: bool = False
    duplicates: int = 0
    stale: int = 0
    mismatched: bool = False
    problems: list[str] = msgspec.field(default_factory=list)


def check_stream(job_id: str, stream: list[Event], state: dict[str, str]) -> StreamCheck:
    """The stream's own invariants, and the hash against its fold.

    "Exactly one terminal event" is checked in two halves: here, nothing follows the
    first one; and a stream without one folds to a live state, which the stuck check
    (or, if the hash says otherwise, this fold check) reports.
    """
    check = StreamCheck()
    if not stream or stream[0].type is not EventType.SUBMITTED:
        check.lost = True
        check.problems.append(f"job {job_id}: stream does not start with `submitted` ({len(stream)} events)")
        return check
    dupes: set[str] = set()
    # A job context's key is its write number within its attempt's dedupe slot (app/events.py
    # keeps entries short), so a key is unique per attempt, not per job.
    keys: set[tuple[int, str]] = set()
    started: set[int] = set()
    ended = False
    attempt = 0
    for event in stream:
        if event.key is not None:
            if (event.attempt, event.key) in keys:
                dupes.add(event.id)
            keys.add((event.attempt, event.key))
        if event.type is EventType.STARTED:
            if event.attempt in started:
                dupes.add(event.id)
            started.add(event.attempt)
        if ended:
            dupes.add(event.id)  # anything after the terminal event, a second terminal event included
        ended = ended or event.terminal
        expected = attempt + 1 if event.type is EventType.STARTED else attempt
        if event.attempt != expected:
            check.stale += 1
            check.problems.append(f"job {job_id}: {event.type} {event.id} has attempt {event.attempt}, not {expected}")
        if event.type is EventType.STARTED:
            attempt = max(attempt, event.attempt)
    if dupes:
        check.duplicates = len(dupes)
        check.problems.append(f"job {job_id}: duplicate events {sorted(dupes)}")
    try:
        folded = fold(stream)
    except IllegalHistory as exc:
        check.mismatched = True
        check.problems.append(f"job {job_id}: illegal history: {exc}")
        return check
    if folded != state:
        check.mismatched = True
        fields = sorted(k for k in folded.keys() | state.keys() if folded.get(k) != state.get(k))
        check.problems.append(f"job {job_id}: hash differs from the fold of its stream in {fields}")
    return check


class ClientCheck(msgspec.Struct, kw_only=True):
    lost: int = 0
    duplicates: int = 0
    problems: list[str] = msgspec.field(default_factory=list)


def check_client(client: ClientLog, stream: list[Event]) -> ClientCheck:
    """The client's events over all its connections must be the stream, exactly."""
    check = ClientCheck(problems=[f"job {client.job_id}: SSE {error}" for error in client.errors])
    want = [event.id for event in stream]
    got = [r.body.id if r.body else f"<{r.event}>" for r in client.received]
    check.lost = len(set(want) - set(got))
    check.duplicates = len(got) - len(set(got))
    if got != want:
        first = next((n for n, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        check.problems.append(
            f"job {client.job_id}: SSE client got {len(got)} events over {client.connections} connections, "
            f"the stream holds {len(want)}; first difference at #{first}: got {got[first:first + 2]}, "
            f"want {want[first:first + 2]}"
        )
    for r, event in zip(client.received, stream, strict=False):
        if r.body != event.out() or r.id != event.id or r.event != event.type:
            check.problems.append(f"job {client.job_id}: SSE message {r.id} differs from stream entry {event.id}")
            break
    if client.finished and client.done_answer != 204:
        check.problems.append(f"job {client.job_id}: reconnecting after the end answered {client.done_answer}")
    return check


def recovery_times(kills: list[Kill], streams: dict[str, list[Event]]) -> list[float]:
    """Seconds from each SIGKILL to the next `started` of each job it interrupted (by another worker)."""
    times = []
    for kill in kills:
        for job_id in kill.held:
            restart = next((
                e for e in streams.get(job_id, [])
                if e.type is EventType.STARTED and e.at > kill.at_ms and e.data.get("worker") != kill.worker
            ), None)
            if restart is not None:  # else it ended without another attempt (attempts used up, cancelled)
                times.append((restart.at - kill.at_ms) / 1000)
    return times


def outcome(state: dict[str, str]) -> str:
    if state.get("state") == "failed":
        return f"failed ({json.loads(state['error'])['type']})"
    return state.get("state") or "missing"


async def read_jobs(
    redis: aioredis.Redis, keys: Keys, job_ids: list[str]
) -> tuple[dict[str, list[Event]], dict[str, dict[str, str]]]:
    """Every job's whole stream and state hash (one pipelined round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.xrange(keys.events(job_id))
            pipe.hgetall(keys.job(job_id))
        replies = await pipe.execute()
    streams = {j: [Event.from_entry(i, f) for i, f in replies[2 * n]] for n, j in enumerate(job_ids)}
    states = {j: state_fields(replies[2 * n + 1]) for n, j in enumerate(job_ids)}
    return streams, states


def judge(chaos: Chaos, streams: dict[str, list[Event]], states: dict[str, dict[str, str]]) -> ChaosReport:
    """Every check over every job and client, summed into the report."""
    config = chaos.config
    problems = list(chaos.problems)
    stuck = [j for j in chaos.job_ids if states[j].get("state") not in TERMINAL]
    problems += [f"job {j} is stuck {states[j].get('state')}" for j in stuck]
    duplicates = stale = mismatched = lost = sse_events = 0
    for job_id in chaos.job_ids:
        stream_check = check_stream(job_id, streams[job_id], states[job_id])
        lost += stream_check.lost
        duplicates += stream_check.duplicates
        stale += stream_check.stale
        mismatched += stream_check.mismatched
        problems += stream_check.problems
    for client in chaos.clients:
        client_check = check_client(client, streams[client.job_id])
        lost += client_check.lost
        duplicates += client_check.duplicates
        sse_events += len(client.received)
        problems += client_check.problems
    if len(chaos.job_ids) < config.jobs:
        lost += config.jobs - len(chaos.job_ids)
    return ChaosReport(
        jobs=config.jobs, workers=config.workers, seed=config.seed,
        outcomes=dict(Counter(outcome(states[j]) for j in chaos.job_ids).most_common()),
        kills=len(chaos.kills), terms=chaos.terms, pauses=len(chaos.pauses), workers_started=chaos.procs.started,
        interrupted=sum(len(k.held) for k in chaos.kills),
        sse_clients=len(chaos.clients),
        reconnected=sum(c.connections > 1 for c in chaos.clients),
        reconnects=sum(c.connections - 1 for c in chaos.clients),
        stream_events=sum(len(s) for s in streams.values()), sse_events=sse_events,
        lost=lost, duplicates=duplicates, stale=stale, mismatched=mismatched, stuck=len(stuck),
        recovery_s=recovery_times(chaos.kills, streams), wall_s=0.0, run_dir="", violations=problems,
    )


async def delete_prefix(redis: aioredis.Redis, prefix: str) -> None:
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):  # every primary's, on a Cluster
        await redis.delete(key)


async def run_chaos(config: ChaosConfig) -> ChaosReport:
    """Run the whole thing: processes up, chaos, checks, processes down, keys deleted."""
    began = time.monotonic()
    prefix = config.prefix or f"chaos-{uuid.uuid4().hex[:10]}"
    run_dir = Path(config.run_dir or tempfile.mkdtemp(prefix="jobtrail-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = Keys(prefix)
    procs = Processes(child_env(config, prefix, run_dir), run_dir)
    # The Store's client: REDIS_URL may name one server, a Sentinel group or a Cluster.
    redis = Store(Settings(redis_url=config.redis_url), role="chaos").pooled()
    try:
        try:
            url = await procs.start_api()
            await procs.start_workers(config.workers)
            limits = httpx.Limits(max_connections=config.jobs + 20)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
                chaos = Chaos(config, http, redis, keys, procs)
                await chaos.run()
            chaos.problems += await procs.check_stopped(config.shutdown_timeout_s + 10)
        finally:
            await procs.stop()
        # Read after every process stopped: nothing writes while the checks look.
        report = judge(chaos, *await read_jobs(redis, keys, chaos.job_ids))
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
    report.wall_s = time.monotonic() - began
    if report.violations or config.run_dir:
        report.run_dir = str(run_dir)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def render(report: ChaosReport) -> str:
    """The figures, one per line, then the violations."""
    recovery = report.recovery_s
    outcomes = ", ".join(f"{n} {name}" for name, n in report.outcomes.items())
    lines = [
        f"jobs              {report.jobs} ({outcomes})",
        f"workers           {report.workers} alive at a time, {report.workers_started} started in all "
        f"(seed {report.seed})",
        f"kills             {report.kills} SIGKILL ({report.interrupted} jobs held by the killed workers), "
        f"{report.terms} SIGTERM, {report.pauses} SIGSTOP",
        f"SSE clients       {report.sse_clients} ({report.reconnected} reconnected), {report.reconnects} reconnects",
        f"events checked    {report.stream_events} in streams, {report.sse_events} received over SSE",
        f"lost              {report.lost}",
        f"duplicates        {report.duplicates}",
        f"stale writes      {report.stale}",
        f"hash != fold      {report.mismatched}",
        f"stuck             {report.stuck}",
        "recovery          " + (
            f"max {max(recovery):.1f} s, median {statistics.median(recovery):.1f} s over {len(recovery)} "
            "restarts (SIGKILL to the job's next `started`)" if recovery else "no restarts"
        ),
        f"wall time         {report.wall_s:.1f} s",
    ]
    if report.run_dir:
        lines.append(f"logs              {report.run_dir}")
    if report.violations:
        lines.append(f"VIOLATIONS ({len(report.violations)}):")
        lines += [f"  {v}" for v in report.violations[:50]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kills", type=int, help="SIGKILLs (default: jobs / 8)")
    parser.add_argument("--terms", type=int, help="SIGTERMs (default: kills / 4)")
    parser.add_argument("--pauses", type=int, default=0, help="SIGSTOPs held past the lease's expiry")
    parser.add_argument("--sse-share", type=float, default=0.5, help="share of jobs followed by an SSE client")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs a worker runs at once")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for every job to end")
    parser.add_argument("--run-dir", default="", help="keep process logs here")
    args = parser.parse_args(argv)
    url = os.environ.get("REDIS_URL")
    if not url:
        parser.error("set REDIS_URL, e.g. redis://127.0.0.1:6379/0")
    kills = args.jobs // 8 if args.kills is None else args.kills
    config = ChaosConfig(
        redis_url=url, jobs=args.jobs, workers=args.workers, seed=args.seed, kills=kills,
        terms=kills // 4 if args.terms is None else args.terms, pauses=args.pauses, sse_share=args.sse_share,
        concurrency=args.concurrency, submit_over_s=args.jobs * 0.2, deadline_s=args.deadline, run_dir=args.run_dir,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the signals
    report = asyncio.run(run_chaos(config))
    print(render(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

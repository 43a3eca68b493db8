"""Lost acknowledged writes in a failover, and what JOBTRAIL_WAIT_REPLICAS costs to prevent them.

    .venv/bin/python -m bench.failover                    # Sentinel and Cluster, killed and paused
    .venv/bin/python -m bench.failover --topology sentinel --scenario pause --failovers 10

(from the repository's root; it starts its own Sentinel group and Cluster from the machine's
redis-server, as the tests do, and removes them at the end.)

Writers run jobs the way the chaos run's workers do (bench/chaos.py): `submitted`,
`started`, a few `progress`, then `succeeded`, each append through jobtrail's EventLog
with an idempotency key, retried while Redis is away (app/patience.py's errors), many
jobs at once. Every append Redis acknowledged is recorded. Then, under that load, the
master (Sentinel) or a primary (Cluster) is SIGKILLed; the writers carry on against the
replica that takes over; after the switch every acknowledged event is looked for in its
job's stream. An acknowledged event that is not there was lost by the failover: Redis
replicates asynchronously, so what the dead primary acknowledged in its last moments may
never have reached the replica. The same is run with WAIT off and with WAIT for one
replica on submissions and terminal events, and beside it, on a healthy group, what the
wait costs: terminal-append latency and jobs per second.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import shutil
import signal
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from jobtrail.config import Settings
from jobtrail.errors import JobNotFound, TransitionRefused
from jobtrail.eventlog import Appended, EventLog
from jobtrail.events import EventType
from jobtrail.keys import Keys
from jobtrail.patience import REDIS_AWAY
from jobtrail.replicawait import WAITED, ReplicaWait
from jobtrail.store import Store
from tests.support.topologies import Node, RedisCluster, SentinelGroup, wait_until

PROGRESS_STEPS = 4
GONE = {"kill": "killed", "pause": "paused"}
WAIT_TIMEOUT_MS = 1000


@dataclass
class Acked:
    job_id: str
    event_type: EventType
    id: str
    at: float  # time.monotonic() of the acknowledgement
    replicas: int | None


@dataclass
class Load:
    """What the writers of one run did."""

    acked: list[Acked] = field(default_factory=list)
    jobs_done: int = 0
    refused: int = 0  # appends the script refused: their job's earlier events were lost
    terminal_latency_s: list[float] = field(default_factory=list)


class Writers:
    """`concurrency` writers, each running jobs one after another until `stop`."""

    def __init__(self, events: EventLog, concurrency: int, run: str) -> None:
        self.events = events
        self.concurrency = concurrency
        self.run = run
        self.load = Load()
        self._ids = itertools.count()
        # time.monotonic() of each writer's last acknowledged append: a writer stuck shows.
        self.last_acked = [time.monotonic()] * concurrency

    async def until(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._writer(stop, number) for number in range(self.concurrency)))

    async def _writer(self, stop: asyncio.Event, writer: int) -> None:
        while not stop.is_set():
            job_id = f"{self.run}-{next(self._ids)}"
            steps: list[tuple[EventType, dict[str, object], int | None]] = [
                (EventType.SUBMITTED, {"kind": "demo", "params": {}, "max_attempts": 1}, None),
                (EventType.STARTED, {"worker": "bench", "attempt": 1}, 1),
                *((EventType.PROGRESS, {"progress": step / PROGRESS_STEPS}, 1) for step in range(1, PROGRESS_STEPS)),
                (EventType.SUCCEEDED, {"result": {"ok": True}}, 1),
            ]
            for number, (event_type, data, attempt) in enumerate(steps):
                began = time.monotonic()
                appended = await self._append(job_id, event_type, data, attempt, key=f"{event_type.value}-{number}")
                if appended is None:
                    self.load.refused += 1
                    break
                self.load.acked.append(Acked(job_id, event_type, appended.id, time.monotonic(), appended.replicas))
                self.last_acked[writer] = time.monotonic()
                if event_type is EventType.SUCCEEDED:
                    self.load.jobs_done += 1
                    self.load.terminal_latency_s.append(time.monotonic() - began)

    async def _append(self, job_id: str, event_type: EventType, data: dict[str, object], attempt: int | None,
                      key: str) -> Appended | None:
        """Append as a worker does: wait Redis out (bounded), the key making a retry land once."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return await self.events.append(job_id, event_type, data, attempt=attempt, key=key)
            except (TransitionRefused, JobNotFound):
                return None
            except REDIS_AWAY:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


@dataclass
class FailoverRun:
    scenario: str
    wait: int
    failovers: int = 0
    acked: int = 0
    acked_last_s: int = 0  # acknowledged in the second before a kill
    lost: Counter[str] = field(default_factory=Counter)  # by kind: waited (submitted/terminal) or other
    lost_unconfirmed: int = 0  # lost waited events whose WAIT had timed out (replicas < asked)
    jobs_losing_outcome: int = 0
    refused: int = 0
    switch_s: list[float] = field(default_factory=list)


class Group:
    """A Sentinel group or a Cluster, with the two ways its primary goes, and the wait for the switch."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.group: SentinelGroup | RedisCluster = (
            SentinelGroup(directory / "sentinel") if kind == "sentinel" else RedisCluster(directory / "cluster"))
        self._gone: Node | None = None

    def start(self) -> None:
        self.group.start()
        self.settle()

    def settle(self) -> None:
        """Wait until every primary's replicas acknowledge its writes at once.

        A group can look healthy (replicas linked) while a replica still waits for its
        first full sync (Redis delays a diskless one by 5 s, for more replicas to join):
        until then a WAIT runs to its timeout, which is not what the cost run measures.
        """
        group = self.group
        if isinstance(group, SentinelGroup):
            wanted = {group.master(): len(group.servers) - 1}
        else:
            wanted = {node: 1 for node in group.primary_nodes()}

        def acknowledged() -> bool:
            for node, replicas in wanted.items():
                with node.client() as client:
                    if int(client.execute_command("WAIT", replicas, 100)) < replicas:
                        return False
            return True

        wait_until(acknowledged, 60, "the replicas did not catch up with their primaries")

    def primary_of(self, key: str) -> Node:
        group = self.group
        return group.master() if isinstance(group, SentinelGroup) else group.node_for(key)

    def kill(self, node: Node) -> None:
        self._gone = node
        node.kill()

    def pause(self, node: Node) -> None:
        """SIGSTOP: the process keeps its connections and its data, and answers nothing."""
        self._gone = node
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._gone is not None and self._gone.process is not None
        self._gone.process.send_signal(signal.SIGCONT)

    def switched(self) -> bool:
        """A replica serves in place of the node that went (asked of nodes other than it)."""
        group, gone = self.group, self._gone
        assert gone is not None
        if isinstance(group, SentinelGroup):
            return group.master() is not gone
        asked = next(node for node in group.nodes if node.running and node is not gone)
        with asked.client() as client:
            table = str(client.execute_command("CLUSTER", "NODES"))
        serving = [line for line in table.splitlines()
                   if "master" in line.split()[2] and "fail" not in line.split()[2] and len(line.split()) > 8]
        return len(serving) == group.primaries and not any(f":{gone.port}@" in line for line in serving)

    def restore(self) -> None:
        """Every node back and healthy: a paused old primary rejoins as a replica, a killed one is started."""
        self.group.restore()
        self.settle()

    def stop(self) -> None:
        if self._gone is not None and self._gone.process is not None and self._gone.running:
            self._gone.process.send_signal(signal.SIGCONT)
        self.group.stop()


def event_log(group: Group, prefix: str, wait: int) -> tuple[EventLog, object]:
    settings = Settings(redis_url=group.group.url, prefix=prefix, redis_timeout_s=1.0)
    redis = Store(settings, role="bench").pooled()
    replica_wait = ReplicaWait(wait, WAIT_TIMEOUT_MS) if wait else None
    return EventLog(redis, Keys(prefix), 3600, activity_maxlen=0, replica_wait=replica_wait), redis


async def measure_cost(group: Group, wait: int, concurrency: int, seconds: float) -> Load:
    events, redis = event_log(group, f"cost{wait}", wait)
    writers = Writers(events, concurrency, f"cost{wait}")
    stop = asyncio.Event()
    running = asyncio.create_task(writers.until(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await running
    await redis.aclose()  # type: ignore[attr-defined]
    return writers.load


async def measure_failovers(group: Group, scenario: str, wait: int, failovers: int, concurrency: int) -> FailoverRun:
    """`failovers` times: writers running, the primary killed or paused, a replica taking over, then the count.

    kill: SIGKILL, as a crashed process. pause: SIGSTOP until a replica has taken over, then
    SIGCONT, as a long stall (a VM paused, a fork on a huge heap): the old primary wakes
    up believing it still is one, and serves the connections it kept until it is demoted.
    """
    result = FailoverRun(scenario=scenario, wait=wait)
    for number in range(failovers):
        prefix = f"{scenario}{wait}-{number}"
        events, redis = event_log(group, prefix, wait)
        writers = Writers(events, concurrency, prefix)
        stop = asyncio.Event()
        running = asyncio.create_task(writers.until(stop))
        await asyncio.sleep(1.5)
        node = await asyncio.to_thread(group.primary_of, events.keys.events(writers.load.acked[-1].job_id))
        gone_at = time.monotonic()
        group.kill(node) if scenario == "kill" else group.pause(node)
        await asyncio.to_thread(wait_until, group.switched, 60, "no replica took over")
        result.switch_s.append(time.monotonic() - gone_at)
        if scenario == "pause":
            group.resume()
        await asyncio.sleep(1.0)
        stop.set()
        await running
        await asyncio.to_thread(group.restore)
        await count_lost(events, writers.load, gone_at, result)
        await redis.aclose()  # type: ignore[attr-defined]
        result.failovers += 1
    return result


async def count_lost(events: EventLog, load: Load, killed_at: float, result: FailoverRun) -> None:
    stored: dict[str, set[str]] = {}
    for job_id in {acked.job_id for acked in load.acked}:
        stored[job_id] = {entry_id for entry_id, _ in await events.redis.xrange(events.keys.events(job_id))}
    result.acked += len(load.acked)
    # A paused primary acknowledges nothing while stopped; what it acknowledges after waking
    # up, before its demotion, counts as "after": the last second before it went is the same.
    result.acked_last_s += sum(1 for acked in load.acked if killed_at - 1 <= acked.at <= killed_at)
    result.refused += load.refused
    losing: set[str] = set()
    for acked in load.acked:
        if acked.id in stored[acked.job_id]:
            continue
        waited = acked.event_type in WAITED
        result.lost["waited" if waited else "other"] += 1
        if waited and acked.replicas is not None and acked.replicas < result.wait:
            result.lost_unconfirmed += 1
        if acked.event_type is EventType.SUCCEEDED:
            losing.add(acked.job_id)
    result.jobs_losing_outcome += len(losing)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


COST_HEADER = "| WAIT replicas | jobs/s | terminal append p50 | p99 |"
LOSS_HEADER = ("| primary | WAIT replicas | failovers | switch (median) | acked writes "
               "| acked in the last 1 s before it went | lost: submitted/terminal | lost: other events "
               "| jobs whose outcome was lost | appends refused after |")


def render(kind: str, costs: dict[int, tuple[Load, float]], runs: list[FailoverRun]) -> str:
    lines = [f"## {kind}", "", COST_HEADER, "|---|---|---|---|"]
    for wait, (load, seconds) in costs.items():
        p50 = statistics.median(load.terminal_latency_s) * 1000
        p99 = percentile(load.terminal_latency_s, 0.99) * 1000
        lines.append(f"| {wait} | {load.jobs_done / seconds:,.0f} | {p50:.2f} ms | {p99:.2f} ms |")
    lines += ["", LOSS_HEADER, "|---" * LOSS_HEADER.count(" | ") + "|---|"]
    for run in runs:
        cells = [GONE[run.scenario], run.wait, run.failovers, f"{statistics.median(run.switch_s):.1f} s",
                 f"{run.acked:,}", f"{run.acked_last_s:,}",
                 f"{run.lost['waited']} ({run.lost_unconfirmed} unconfirmed)", run.lost["other"],
                 run.jobs_losing_outcome, run.refused]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


async def bench(kind: str, scenarios: list[str], failovers: int, concurrency: int, cost_s: float) -> str:
    directory = Path(tempfile.mkdtemp(prefix=f"jobtrail-failover-{kind}-"))
    group = Group(kind, directory)
    try:
        await asyncio.to_thread(group.start)
        costs = {}
        for wait in (0, 1):
            costs[wait] = (await measure_cost(group, wait, concurrency, cost_s), cost_s)
        runs = [await measure_failovers(group, scenario, wait, failovers, concurrency)
                for scenario in scenarios for wait in (0, 1)]
        return render(kind, costs, runs)
    finally:
        group.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", choices=["sentinel", "cluster", "both"], default="both")
    parser.add_argument("--scenario", choices=["kill", "pause", "both"], default="both",
                        help="how the primary goes: SIGKILL, or SIGSTOP until a replica took over")
    parser.add_argument("--failovers", type=int, default=3, help="per topology, scenario and WAIT setting")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs written at once, through one client")
    parser.add_argument("--cost-seconds", type=float, default=3.0, help="length of each cost run")
    args = parser.parse_args()
    # The writers' retries through a failover would log a line each; the table is the output.
    logging.basicConfig(level=logging.ERROR)
    kinds = ["sentinel", "cluster"] if args.topology == "both" else [args.topology]
    for kind in kinds:
        scenarios = ["kill", "pause"] if args.scenario == "both" else [args.scenario]
        print(asyncio.run(bench(kind, scenarios, args.failovers, args.concurrency, args.cost_seconds)), flush=True)
        print()


if __name__ == "__main__":
    main()

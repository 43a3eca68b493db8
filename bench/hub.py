"""Hub bench: one API process's hub watching many jobs, each receiving events; is every event delivered, how fast.

    .venv/bin/python -m bench.hub                      # 100 and 10,000 watched jobs, 1 event/s each
    .venv/bin/python -m bench.hub --jobs 100,10000 --seconds 20 --rate 1
    .venv/bin/python -m bench.hub --topology cluster   # or sentinel

Starts its own Redis on free ports (one server by default). In this process: the hub
(app/hub.py) with one subscriber per job, as an SSE client has, under the garbage-collector
policy `jobtrail serve` applies; in a second process: a writer appending one progress event
per job per 1/rate seconds through the append script (so each publishes its wake), spread
evenly over the second, packed by hand on one socket per primary so that the writer keeps
up. Each event carries the time its append was sent; the hub's side notes when the
subscriber got it. Reported per row: events emitted and delivered, p50/p99 send→observe, CPU
of the hub's process per delivered event (the stable figure on a shared machine) and of the
Redis primaries. `--fanout` adds a row of 1,000 subscribers on one job at 20 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import hiredis
from redis.asyncio import RedisCluster

from bench.redis_server import BenchRedis
from jobtrail import gcpolicy
from jobtrail.config import Settings
from jobtrail.eventlog import render_append_script
from jobtrail.events import EventType, StartedData, SubmittedData
from jobtrail.reducer import fields_for
from jobtrail.services import open_services
from tests.support.topologies import RedisCluster as ClusterOfNodes
from tests.support.topologies import SentinelGroup


def _settings(url: str, prefix: str) -> Settings:
    return Settings(redis_url=url, prefix=prefix, auth="off", redis_pool_size=8, sse_queue_size=10_000)


async def _create(url: str, prefix: str, jobs: list[str]) -> None:
    services = open_services(_settings(url, prefix), role="bench")
    # A Cluster client's pool refuses what it cannot take at once, rather than wait.
    size = 8 if isinstance(services.redis, RedisCluster) else 200
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        # Keyed: a client that retries after a timeout (a loaded machine) finds the write done.
        await asyncio.gather(*(services.events.append(j, EventType.SUBMITTED,
                                                      SubmittedData(kind="demo", params={}, max_attempts=1),
                                                      key="bench-submitted")
                               for j in chunk))
        await asyncio.gather(*(services.events.append(j, EventType.STARTED, StartedData(worker="b", attempt=1),
                                                      attempt=1, key="bench-started") for j in chunk))
    await services.redis.aclose()


def _resp(*parts: bytes) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


def _writer(url: str, prefix: str, jobs: list[str], rate: float, seconds: float, start_at: float) -> None:
    """Append `rate` events/s to each job for `seconds`, spread over each period; `current` carries the emit time.

    The appends due by each moment go out at once, as EVALSHAs of the append script with
    the keys and arguments EventLog.append gives it, stamped with the time they are sent.
    Packed by hand on a socket of its own, replies parsed in bulk: redis-py's pipeline cost
    this process a whole CPU at 10,000 appends/s, and the writer, not the hub, fell behind.
    """

    async def run() -> None:
        services = open_services(_settings(url, prefix), role="bench-writer")
        sha = (await services.redis.script_load(render_append_script())).encode()
        homes = await _primaries_of(services.redis, [services.keys.job(j) for j in jobs])
        await services.redis.aclose()
        # One connection per primary (one on a single server or a Sentinel master).
        links = {address: await asyncio.open_connection(*address) for address in set(homes)}
        # Everything but the data (the one argument that changes) packed once per job.
        fields = [part.encode() for pair in fields_for(EventType.PROGRESS, {"progress": 0.5}).items() for part in pair]
        count = 3 + 4 + 8 + len(fields)  # EVALSHA, sha, numkeys; the keys; the append arguments
        heads = [b"*%d\r\n" % count + _resp(b"EVALSHA", sha, b"4", *(k.encode() for k in services.keys.append_keys(j)),
                                             b"progress", b"") for j in jobs]
        tail = _resp(b"", str(services.events.retention_s).encode(), b"", b"", b"", *fields)
        period = 1.0 / rate
        rounds = int(seconds * rate)
        total = rounds * len(jobs)
        slice_s = period / len(jobs)
        per_link = {address: homes.count(address) * rounds for address in links}
        replies = [asyncio.create_task(_check_replies(reader, per_link[address]))
                   for address, (reader, _) in links.items()]
        sent = 0
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while sent < total:
            now = time.time()
            due = min(total, int((now - start_at) / slice_s) + 1, sent + 500)
            if due <= sent:
                await asyncio.sleep(max(0.0, start_at + sent * slice_s - now))
                continue
            # The data as app/events.py packs a ProgressData: progress, current, total.
            emitted = b"0.5,%d," % int(now * 1_000_000)
            batches: dict[tuple[str, int], list[bytes]] = {address: [] for address in links}
            for n in range(sent, due):
                job = n % len(jobs)
                batches[homes[job]].append(heads[job] + _resp(emitted + b"%d" % (n // len(jobs) + 1)) + tail)
            for address, batch in batches.items():
                if batch:
                    links[address][1].write(b"".join(batch))
            sent = due
            for _, writer in links.values():
                await writer.drain()
            await asyncio.sleep(0)
        await asyncio.gather(*replies)
        for _, writer in links.values():
            writer.close()

    asyncio.run(run())


async def _primaries_of(redis, keys: list[str]) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """The (host, port) of the primary that holds each key: a Cluster's by slot, a Sentinel's master, or the server."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        return [(node.host, node.port) for node in map(redis.get_node_from_key, keys)]
    pool = redis.connection_pool
    if hasattr(pool, "get_master_address"):
        host, port = await pool.get_master_address()
    else:
        host, port = pool.connection_kwargs.get("host", "127.0.0.1"), pool.connection_kwargs.get("port", 6379)
    return [(host, int(port))] * len(keys)


async def _check_replies(reader: asyncio.StreamReader, expected: int) -> None:
    parser = hiredis.Reader()
    got = 0
    while got < expected:
        data = await reader.read(1 << 16)
        if not data:
            raise RuntimeError("the bench writer's connection closed")
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            got += 1
            if reply != b"OK" and not (isinstance(reply, bytes) and reply.startswith(b"ok ")):
                raise RuntimeError(f"bench append failed: {reply!r}")


async def _redis_cpu(redis) -> float:  # type: ignore[no-untyped-def]
    """Seconds of CPU the Redis primaries used so far (their appends, publishes and the hub's reads)."""
    if isinstance(redis, RedisCluster):
        infos = list((await redis.info("cpu", target_nodes=RedisCluster.PRIMARIES)).values())
    else:
        infos = [await redis.info("cpu")]
    return sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in infos)


async def _row(url: str, jobs_count: int, subscribers_per_job: int, rate: float, seconds: float) -> dict[str, object]:
    prefix = f"bench-hub-{uuid.uuid4().hex[:8]}"
    jobs = [f"j{n}" for n in range(jobs_count)]
    await _create(url, prefix, jobs)
    services = open_services(_settings(url, prefix), role="api")
    gcpolicy.settle()  # as `jobtrail serve` does before it serves
    hub = services.hub
    hub.start()
    latencies: list[float] = []
    delivered = 0

    async def consume(sub) -> None:  # type: ignore[no-untyped-def]
        nonlocal delivered
        while True:
            event = await sub.get(timeout=3600)
            if event is None or event.type is not EventType.PROGRESS:
                continue
            latencies.append(time.time() - event.data["current"] / 1_000_000)
            delivered += 1

    consumers = []
    for start in range(0, jobs_count, 500):
        chunk = jobs[start : start + 500]
        subs = await asyncio.gather(*(hub.subscribe(services.keys.events(j), after="0-0")
                                      for j in chunk for _ in range(subscribers_per_job)))
        consumers += [asyncio.create_task(consume(s)) for s in subs]
    # The subscribe-time reads done (10,000 streams take seconds on a loaded Cluster):
    # a hub still busy with them starts the row behind, and on a machine where it only
    # just keeps up, stays that far behind to the end.
    while hub.dirty_count:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    start_at = time.time() + 1.0
    writer = multiprocessing.Process(target=_writer, args=(url, prefix, jobs, rate, seconds, start_at))
    cpu0, reads0 = time.process_time(), hub.reads
    redis_cpu0 = await _redis_cpu(services.redis)
    writer.start()
    expected = jobs_count * subscribers_per_job * int(seconds * rate)
    await asyncio.get_running_loop().run_in_executor(None, writer.join)
    deadline = time.time() + 10
    while delivered < expected and time.time() < deadline:
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    redis_cpu = await _redis_cpu(services.redis) - redis_cpu0
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    connections, reads = hub.wakes.connections, hub.reads - reads0
    await hub.stop()
    await services.redis.aclose()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"jobs": jobs_count, "subs/job": subscribers_per_job, "ev/s/job": rate, "emitted": expected,
            "delivered": delivered, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "cpu_us_per_event": cpu / max(delivered, 1) * 1e6, "pubsub_conns": connections,
            "redis_cpu_us_per_event": redis_cpu / max(delivered, 1) * 1e6, "reads": reads,
            "median_ms": statistics.median(latencies) * 1000 if latencies else float("nan")}


def _run(url: str, args: argparse.Namespace) -> list[dict[str, object]]:
    rows = []
    plan = [(int(n), 1, args.rate) for n in args.jobs.split(",")]
    if args.fanout:
        plan.append((1, 1000, 20.0))
    for jobs, subs, rate in plan:
        rows.append(asyncio.run(_row(url, jobs, subs, rate, args.seconds)))
        print(f"  done: {jobs} jobs x {subs} subscribers", file=sys.stderr, flush=True)
    return rows


def _start(stack: contextlib.ExitStack, topology: str) -> str:
    if topology == "single":
        return stack.enter_context(BenchRedis()).url
    directory = Path(tempfile.mkdtemp(prefix=f"jobtrail-bench-hub-{topology}-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    group = (SentinelGroup(directory, replicas=1, sentinels=1) if topology == "sentinel"
             else ClusterOfNodes(directory, replicas=0))
    stack.callback(group.stop)
    return group.start().url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="100,10000", help="watched-job counts, comma-separated")
    parser.add_argument("--rate", type=float, default=1.0, help="events per second per job")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fanout", action="store_true", help="also 1,000 subscribers on one job at 20 ev/s")
    parser.add_argument("--topology", choices=["single", "sentinel", "cluster"], default="single",
                        help="the Redis to start: one server, a Sentinel master (one replica, one sentinel), "
                             "or a cluster of three primaries (no replicas: the hub reads primaries only)")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.redis_url or _start(stack, args.topology)
        rows = _run(url, args)
    print(f"hub bench: one process, {args.seconds:.0f} s per row, {os.cpu_count()} CPUs (shared machine), "
          f"{args.topology if not args.redis_url else 'given'} Redis")
    print("| watched jobs | subscribers/job | events/s/job | emitted | delivered | p50 ms | p99 ms "
          "| hub CPU µs/event | Redis CPU µs/event | XRANGEs | pub/sub conns |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['jobs']:,} | {r['subs/job']:,} | {r['ev/s/job']:g} | {r['emitted']:,} | {r['delivered']:,} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_us_per_event']:.0f} "
              f"| {r['redis_cpu_us_per_event']:.0f} | {r['reads']:,} | {r['pubsub_conns']} |")
    return 0 if all(r["delivered"] == r["emitted"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

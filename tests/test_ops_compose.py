"""ops/compose.sentinel.yaml and ops/compose.cluster.yaml: wired as they say, and runnable.

No Docker engine runs here, so each file is checked twice: its services, ports, URLs and
start order are read from the YAML; then the same topology is started from the files' own
redis-server command lines and ops/sentinel.conf, on loopback (each container's name
becomes 127.0.0.1 and a port of its own), and jobtrail, on the file's REDIS_URL with only
the addresses rewritten, appends an event that a replica confirms.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import EventType
from jobtrail.keys import Keys
from jobtrail.replicawait import ReplicaWait
from jobtrail.store import Store
from jobtrail.topology import parse_topology
from tests.support.env import ROOT
from tests.support.redis_server import free_port
from tests.support.topologies import wait_until

OPS = ROOT / "ops"
CONF_IN_IMAGE = "/usr/local/etc/redis/redis.conf"
SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]
SENTINEL_SERVERS = ["redis-master", "redis-replica-1", "redis-replica-2"]
CLUSTER_NODES = [f"redis-node-{n}" for n in range(1, 7)]


def compose(name: str) -> dict[str, Any]:
    return yaml.safe_load((OPS / name).read_text())


def redis_url(service: dict[str, Any]) -> str:
    return service["environment"]["REDIS_URL"]


def server_args(service: dict[str, Any]) -> list[str]:
    """What follows `redis-server` in a service's command (the `sh -c` form's too), its hostname filled in."""
    command = service["command"]
    if command[0] == "sh":
        command = shlex.split(command[2].replace("$$HOSTNAME", service["hostname"]))
    return command[command.index("redis-server") + 1:]


def test_the_sentinel_file_runs_a_master_two_replicas_and_three_sentinels_that_api_and_workers_ask():
    services = compose("compose.sentinel.yaml")["services"]
    assert set(services) == {*SENTINEL_SERVERS, *SENTINELS, "api", "worker"}
    for replica in SENTINEL_SERVERS[1:]:
        args = server_args(services[replica])
        assert args[args.index("--replicaof") + 1:args.index("--replicaof") + 3] == ["redis-master", "6379"]
    monitor = sentinel_conf_lines("sentinel monitor")[0].split()
    assert monitor[2:5] == ["jobtrail", "redis-master", "6379"]
    for sentinel in SENTINELS:
        assert "./sentinel.conf:/etc/jobtrail/sentinel.conf:ro" in services[sentinel]["volumes"]
    for process in ("api", "worker"):
        topology = parse_topology(redis_url(services[process]))
        assert topology.kind == "sentinel"
        assert topology.service == monitor[2]
        assert topology.hosts == tuple((name, 26379) for name in SENTINELS)
        assert set(services[process]["depends_on"]) == set(SENTINELS)
        assert all(need["condition"] == "service_healthy" for need in services[process]["depends_on"].values())
    assert services["api"]["ports"] == ["8000:8000"]


def test_the_cluster_file_runs_six_nodes_joined_once_before_api_and_workers_start():
    services = compose("compose.cluster.yaml")["services"]
    assert set(services) == {*CLUSTER_NODES, "cluster-create", "api", "worker"}
    for node in CLUSTER_NODES:
        args = server_args(services[node])
        assert args[0] == CONF_IN_IMAGE and args[args.index("--cluster-enabled") + 1] == "yes"
        assert args[args.index("--cluster-announce-hostname") + 1] == node
    create = services["cluster-create"]
    assert set(create["depends_on"]) == set(CLUSTER_NODES)
    script = create["command"][2]
    assert "--cluster-replicas 1" in script and "for n in 1 2 3 4 5 6" in script
    for process in ("api", "worker"):
        topology = parse_topology(redis_url(services[process]))
        assert topology.kind == "cluster"
        assert set(topology.hosts) <= {(name, 6379) for name in CLUSTER_NODES}
        assert services[process]["depends_on"] == {"cluster-create": {"condition": "service_completed_successfully"}}


def sentinel_conf_lines(prefix: str) -> list[str]:
    return [line for line in (OPS / "sentinel.conf").read_text().splitlines() if line.startswith(prefix)]


class Processes:
    """redis-server and redis-sentinel processes of one test; all killed at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, program: str, config: Path, args: list[str], port: int) -> None:
        """`program config args`, where the container's /data is a directory of its own."""
        own = self.directory / name
        own.mkdir()
        copy = own / config.name
        copy.write_text(config.read_text().replace("dir /data", f"dir {own}"))
        args = [arg.replace("/data/", f"{own}/") for arg in args]
        self.running.append(subprocess.Popen(
            [program, str(copy), *args, "--port", str(port), "--bind", "127.0.0.1", "--logfile", str(own / "log"),
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    def stop(self) -> None:
        for process in self.running:
            process.kill()
            process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def on_loopback(args: list[str], ports: dict[str, int]) -> list[str]:
    """A service's arguments with the repository's redis.conf, names as 127.0.0.1, ports as assigned."""
    out = [str(OPS / "redis.conf") if arg == CONF_IN_IMAGE else arg for arg in args]
    for index, arg in enumerate(out):
        if arg in ports:
            out[index] = "127.0.0.1"
            if index + 1 < len(out) and out[index + 1] == "6379":
                out[index + 1] = str(ports[arg])
    return out[1:]


def loopback_url(url: str, ports: dict[str, int]) -> str:
    for name, port in sorted(ports.items(), key=lambda item: -len(item[0])):
        url = url.replace(f"{name}:26379", f"127.0.0.1:{port}").replace(f"{name}:6379", f"127.0.0.1:{port}")
    return url


async def confirmed_append(url: str, prefix: str) -> int | None:
    """Append a submission through jobtrail on `url`, waiting for one replica; how many confirmed it."""
    redis = Store(Settings(redis_url=url), role="test").pooled()
    try:
        events = EventLog(redis, Keys(prefix), 60, activity_maxlen=0, replica_wait=ReplicaWait(1, 10_000))
        appended = await events.append("compose-job", EventType.SUBMITTED,
                                       {"kind": "demo", "params": {}, "max_attempts": 1})
        await redis.delete(*Keys(prefix).all_job_keys("compose-job"))
        return appended.replicas
    finally:
        await redis.aclose()


async def test_the_sentinel_files_commands_make_a_group_that_jobtrail_writes_to(processes, tmp_path, prefix):
    services = compose("compose.sentinel.yaml")["services"]
    ports = {name: free_port() for name in [*SENTINEL_SERVERS, *SENTINELS]}
    for name in SENTINEL_SERVERS:
        args = on_loopback(["redis-server", *server_args(services[name])], ports)
        # No 5 s wait before a replica's first sync, which the test would only wait out.
        processes.start(name, "redis-server", Path(args[0]), [*args[1:], "--repl-diskless-sync-delay", "0"],
                        ports[name])
    for name in SENTINELS:
        config = tmp_path / f"{name}.conf"  # what the service copies to its volume, names made loopback
        config.write_text((OPS / "sentinel.conf").read_text().replace(
            "redis-master 6379", f"127.0.0.1 {ports['redis-master']}"))
        processes.start(name, "redis-sentinel", config, ["--sentinel", "announce-ip", "127.0.0.1"], ports[name])
    sentinel = redis_client(ports["sentinel-1"])
    wait_until(lambda: int(sentinel.sentinel_master("jobtrail")["num-slaves"]) == 2
               and int(sentinel.sentinel_master("jobtrail")["num-other-sentinels"]) == 2, 30,
               "the sentinels did not see both replicas and each other")
    url = loopback_url(redis_url(services["api"]), ports)
    assert (await confirmed_append(url, prefix) or 0) >= 1  # WAIT counts every replica that has it


async def test_the_cluster_files_commands_make_a_cluster_that_jobtrail_writes_to(processes, prefix):
    services = compose("compose.cluster.yaml")["services"]
    ports = {name: node_port() for name in CLUSTER_NODES}
    for name in CLUSTER_NODES:
        # The name each node announces, as clients get it back: resolvable here as well.
        args = [arg if arg != name else "localhost"
                for arg in on_loopback(["redis-server", *server_args(services[name])], ports)]
        processes.start(name, "redis-server", Path(args[0]), [*args[1:], "--repl-diskless-sync-delay", "0"],
                        ports[name])
    for name in CLUSTER_NODES:
        wait_until(lambda name=name: redis_client(ports[name]).ping(), 10, f"{name} did not start")
    # What cluster-create runs, with the addresses it would resolve.
    subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{ports[name]}" for name in CLUSTER_NODES),
                    "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
    first = redis_client(ports["redis-node-1"])
    wait_until(lambda: "cluster_state:ok" in first.execute_command("CLUSTER", "INFO"), 30, "the cluster did not form")
    url = loopback_url(redis_url(services["api"]), ports)
    assert (await confirmed_append(url, prefix) or 0) >= 1  # WAIT counts every replica that has it


def node_port() -> int:
    """A free port a cluster node can take: its bus listens 10,000 above (as in the compose file)."""
    while (port := free_port()) > 55535:
        pass
    return port


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

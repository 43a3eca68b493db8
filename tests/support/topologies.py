"""Real Redis Sentinel groups and Redis Clusters, started on loopback ports for a test session.

Both are made from the machine's own `redis-server` (Debian's), the way an operator would
make them: a cluster of three primaries with one replica each, joined by `redis-cli
--cluster create`, and a Sentinel group of one master, two replicas and three sentinels.
`start()` returns only once the group is usable (every slot served and every replica
linked; the sentinels agreeing on the master and seeing each other), and raises with the
servers' last log lines when it cannot be: a test session fails, it never skips.

Timeouts are short (a node is judged down after 1 s, not 15 s) so the failover tests finish
in seconds; every process is killed by `stop()`, which the session fixtures always call.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import free_port, free_ports

# How long a group may take to form; a cluster usually takes 2-3 s, Sentinel 1-2 s.
START_TIMEOUT_S = 60.0
NODE_TIMEOUT_MS = 1000
SENTINEL_SERVICE = "jobtrail"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` (errors count as "not yet") until it holds, or raise naming `what`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout_s:.0f} s" + (f" (last error: {last_error})" if last_error else ""))


def start_all(nodes: list[Node], ready: Callable[[], None], stop: Callable[[], None]) -> None:
    """Start `nodes`, then wait for `ready()`; on a failure, `stop()` them all and raise with their last log lines."""
    try:
        for node in nodes:
            node.start()
        ready()
    except BaseException as exc:
        logs = "\n".join(f"--- {node.address}\n{node.tail()}" for node in nodes)
        stop()
        if isinstance(exc, RuntimeError):
            raise RuntimeError(f"{exc}\n{logs}") from None
        raise


class Node:
    """One redis-server (or sentinel) process on its own port, directory and log file."""

    def __init__(self, directory: Path, port: int, args: list[str], *, sentinel: bool = False,
                 password: str | None = None) -> None:
        self.directory = directory
        self.port = port
        self.args = args
        self.sentinel = sentinel
        self.password = password  # its requirepass, for the harness's own clients
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def start(self, *overrides: str) -> Node:
        """Start it; `overrides` come after its own arguments, so they win (e.g. `--replicaof no one`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [*server_command(self.sentinel, self.directory), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--logfile", str(self.log), *self.args, *overrides],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        what = "sentinel" if self.sentinel else "redis-server"
        wait_until(self.answers, 10, f"{what} on port {self.port} did not answer")
        return self

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the process on port {self.port} exited; its log:\n{self.tail()}")
        return bool(self.client().ping())

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, decode_responses=True, socket_timeout=2,
                           socket_connect_timeout=2)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            return client.info(section)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would; `start()` again to bring it back on the same port and directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def shut_down(self) -> None:
        """SHUTDOWN SAVE: it writes its data to dump.rdb, which `start()` loads (see `forget_saved_data`)."""
        assert not self.sentinel and self.process is not None
        # A bare socket: redis-py's client retries the connection SHUTDOWN closes, seconds per node.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            auth = f"AUTH {self.password}\r\n" if self.password else ""
            sock.sendall(f"{auth}SHUTDOWN SAVE\r\n".encode())
            self.process.wait(timeout=30)
        self.process = None

    def forget_saved_data(self) -> None:
        """Once loaded: a later restart (a killed node, restored) must not bring back this old data."""
        (self.directory / "dump.rdb").unlink(missing_ok=True)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def server_command(sentinel: bool, directory: Path) -> list[str]:
    """`redis-server`, or a sentinel: `redis-sentinel` (Debian's package) or the same binary's `--sentinel`.

    A sentinel needs a config file it can rewrite: it records what it learns there.
    """
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    if not sentinel:
        return ["redis-server", "--save", "", "--appendonly", "no"]
    config = directory / "sentinel.conf"
    if not config.exists():
        config.write_text("")
    if shutil.which("redis-sentinel") is not None:
        return ["redis-sentinel", str(config)]
    return ["redis-server", str(config), "--sentinel"]


class RedisCluster:
    """A Redis Cluster: `primaries` primaries with `replicas` replicas each, on loopback ports."""

    def __init__(self, directory: Path, *, primaries: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        """Two startup nodes, as a user would give them; the client discovers the rest."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes[:2])

    def start(self) -> RedisCluster:
        count = self.primaries * (1 + self.replicas)
        # Chosen together: one at a time, a port given back could come again as another
        # node's bus port (a CI run once lost its whole Cluster to that bind error).
        ports = free_ports(2 * count)
        for index in range(count):
            port, bus = ports[2 * index], ports[2 * index + 1]
            self.nodes.append(Node(self.directory / f"node-{index}", port, [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                # The bus on a port of its own: port + 10000 may be taken, or past 65535.
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica whose primary just died takes over at once, without waiting out
                # a validity window meant for slow WANs.
                "--cluster-replica-validity-factor", "0",
            ]))
        def ready() -> None:
            self._create()
            wait_until(self.healthy, START_TIMEOUT_S, "the cluster did not serve every slot with every replica linked")

        start_all(self.nodes, ready, self.stop)
        return self

    def _create(self) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *(node.address for node in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create exited {done.returncode}:\n{done.stdout}\n{done.stderr}")

    def healthy(self) -> bool:
        """Every running node sees the whole cluster as ok; every running replica is linked to its primary."""
        for node in self.nodes:
            if not node.running:
                continue
            with node.client() as client:
                info = client.cluster("INFO")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
                replication = client.info("replication")
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return False
        return len(self.primary_nodes()) == self.primaries

    def primary_nodes(self) -> list[Node]:
        """The running nodes that serve slots now (this changes when a replica takes over)."""
        return [node for node in self.nodes if node.running and node.info("replication")["role"] == "master"]

    def node_for(self, key: str) -> Node:
        """The running primary that serves `key`'s slot now, as the cluster's own view says."""
        with next(node for node in self.nodes if node.running).client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            table = client.execute_command("CLUSTER", "NODES")
        # Each line: id ip:port@bus flags master-id ping pong epoch link slot-range...
        for line in str(table).splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            for span in fields[8:]:
                first, _, last = span.partition("-")
                if not first.startswith("[") and int(first) <= slot <= int(last or first):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no running primary serves slot {slot}")

    def restore(self) -> None:
        """Start every node a test killed (a primary that lost its slots rejoins as a replica); wait until healthy."""
        for node in self.nodes:
            if not node.running:
                node.start()
        wait_until(self.healthy, START_TIMEOUT_S, "the restored cluster did not serve every slot, replicas linked")

    def stop_servers(self) -> None:
        """Redis down: every node stopped with its data saved, replicas first, so that none takes over."""
        primaries = self.primary_nodes()
        for node in [*(node for node in self.nodes if node.running and node not in primaries), *primaries]:
            node.shut_down()

    def start_servers(self) -> None:
        """Every node back on its saved data and its own nodes.conf (its role, its slots); wait until healthy."""
        for node in self.nodes:
            if not node.running:
                node.start()
        wait_until(self.healthy, START_TIMEOUT_S, "the restarted cluster did not serve every slot, replicas linked")
        for node in self.nodes:
            node.forget_saved_data()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


class SentinelGroup:
    """One master, `replicas` replicas and `sentinels` sentinels (quorum: a majority) watching it."""

    def __init__(self, directory: Path, *, replicas: int = 2, sentinels: int = 3, service: str = SENTINEL_SERVICE,
                 password: str | None = None, sentinel_password: str | None = None) -> None:
        """`password`: the data nodes' requirepass; `sentinel_password`: the sentinels' own."""
        self.directory = directory
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.servers: list[Node] = []
        self.sentinels: list[Node] = []
        self._stopped_master: Node  # set by stop_servers()

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return (f"redis+sentinel://{credentials}" + ",".join(node.address for node in self.sentinels)
                + f"/{self.service}/0")

    def start(self) -> SentinelGroup:
        master_port = free_port()
        auth = ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        self.servers.append(Node(self.directory / "server-0", master_port, auth, password=self.password))
        for index in range(1, 1 + self.replica_count):
            self.servers.append(Node(self.directory / f"server-{index}", free_port(),
                                     ["--replicaof", "127.0.0.1", str(master_port), *auth], password=self.password))
        quorum = self.sentinel_count // 2 + 1
        config = (
            f"sentinel monitor {self.service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {self.service} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {self.service} {NODE_TIMEOUT_MS * 5}\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        if self.password:
            config += f"sentinel auth-pass {self.service} {self.password}\n"
        if self.sentinel_password:
            # The sentinels' own password, and the one they give each other.
            config += f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
        for index in range(self.sentinel_count):
            node = Node(self.directory / f"sentinel-{index}", free_port(), [], sentinel=True,
                        password=self.sentinel_password)
            node.directory.mkdir(parents=True, exist_ok=True)
            (node.directory / "sentinel.conf").write_text(config)
            self.sentinels.append(node)
        start_all(
            [*self.servers, *self.sentinels],
            lambda: wait_until(self.healthy, START_TIMEOUT_S, "the sentinels did not agree on a master"),
            self.stop,
        )
        return self

    def master(self) -> Node:
        """The server that the sentinels name master now (it changes with a failover)."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with sentinel.client() as client:
                _, port = client.sentinel_get_master_addr_by_name(self.service)
            return next(node for node in self.servers if node.port == int(port))
        raise RuntimeError("no sentinel is running")

    def healthy(self) -> bool:
        """Every running sentinel names the same running master, knows its replicas and the other sentinels."""
        running_servers = [node for node in self.servers if node.running]
        running_sentinels = [node for node in self.sentinels if node.running]
        master = self.master()
        if not master.running or master.info("replication")["role"] != "master":
            return False
        for sentinel in running_sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(self.service)
            flags = str(state["flags"]).split(",")
            # A master they still flag down, though back, is one redis-py's Sentinel client refuses.
            if int(state["port"]) != master.port or "master" not in flags or {"s_down", "o_down"} & set(flags):
                return False
            if int(state["num-slaves"]) < len(running_servers) - 1:
                return False
            if int(state["num-other-sentinels"]) < len(running_sentinels) - 1:
                return False
        return int(master.info("replication")["connected_slaves"]) == len(running_servers) - 1

    def restore(self) -> None:
        """Start every server or sentinel a test killed (an old master comes back as a replica); wait until healthy."""
        for node in [*self.servers, *self.sentinels]:
            if not node.running:
                node.start()
        wait_until(self.healthy, START_TIMEOUT_S, "the restored Sentinel group did not agree on a master")

    def stop_servers(self) -> None:
        """Redis down: every data server stopped with its data saved, replicas first; the sentinels stay.

        With no replica left to promote, the sentinels' failover aborts: the master comes back as master.
        """
        master = self.master()
        for node in [*(node for node in self.servers if node is not master), master]:
            if node.running:
                node.shut_down()
        self._stopped_master = master

    def start_servers(self) -> None:
        """The master back first (whichever server it is now, not always the first one), then the replicas."""
        master = self._stopped_master
        if not master.running:
            master.start("--replicaof", "no", "one")
        for node in self.servers:
            if not node.running:
                node.start("--replicaof", "127.0.0.1", str(master.port))
        wait_until(self.healthy, START_TIMEOUT_S, "the restarted Sentinel group did not agree on a master")
        for node in self.servers:
            node.forget_saved_data()

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.kill()


TOPOLOGIES = ("single", "sentinel", "cluster")

# `@over_topologies` runs a test once per topology: its `settings`, `redis_client`, `services`,
# `api` and workers all use that topology's REDIS_URL.
over_topologies = pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)

# For tests that read a live SSE tail: the hub (sharded pub/sub wakes, single-key reads) runs on
# all three; the name stays so that those tests say what they depend on.
over_hub_topologies = over_topologies


class WholeGroupDown:
    """A group's servers as one Redis to take down and bring back: `kill()` stops them all, `start()` restarts them.

    For the outage tests, beside a single RedisServer (tests/support/redis_server.py): the
    same `url`, `kill()` and `start()`. Unlike a failover no replica takes over, and the data
    is kept (saved at the stop), as one server's append-only file keeps it.
    """

    def __init__(self, group: RedisCluster | SentinelGroup) -> None:
        self.group = group
        self.down = False

    @property
    def url(self) -> str:
        return self.group.url

    def kill(self) -> None:
        self.group.stop_servers()
        self.down = True

    def start(self) -> WholeGroupDown:
        self.group.start_servers()
        self.down = False
        return self


class TopologyUnderTest:
    """What a test runs on: a topology's name, its REDIS_URL and (unless single) the group behind it."""

    def __init__(self, name: str, url: str, group: RedisCluster | SentinelGroup | None) -> None:
        self.name = name
        self.url = url
        self.group = group

    def __repr__(self) -> str:
        return f"<{self.name} {self.url}>"

    def delete_matching(self, pattern: str) -> None:
        """Remove every key matching a SCAN pattern, on every node that serves keys: a test's cleanup."""
        for client in self._primary_clients():
            with client:
                for key in client.scan_iter(match=pattern, count=1000):
                    client.delete(key)

    def _primary_clients(self) -> list[redis.Redis]:
        if isinstance(self.group, RedisCluster):
            return [node.client() for node in self.group.primary_nodes()]
        if isinstance(self.group, SentinelGroup):
            return [self.group.master().client()]
        return [redis.Redis.from_url(self.url, decode_responses=True)]

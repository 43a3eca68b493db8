"""Fixtures: a real Redis, a fresh key prefix per test, the API on a real port, workers.

Tests run against Redis at REDIS_URL (default redis://127.0.0.1:6379/0). When nothing
answers there and redis-server is installed, the session starts a throwaway server;
when no Redis can be had at all, the run fails. It never skips.

A test marked `@over_topologies` (tests/support/topologies.py) runs on one server, on a
Sentinel group and on a Cluster: the session starts each group the first time a test needs
it, once, and stops it at the end; `settings`, `redis_client`, `services`, `api` and the
workers follow the `topology` fixture.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn

from jobtrail.api.app import create_app
from jobtrail.api.protocol import protocol_class
from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.keys import Keys
from jobtrail.services import Services, build_services, open_services
from jobtrail.store import Store
from jobtrail.workers.kinds_loader import load_kinds
from tests.support.env import ROOT, worker_env
from tests.support.redis_server import RedisServer
from tests.support.topologies import RedisCluster, SentinelGroup, TopologyUnderTest, WholeGroupDown

Group = TypeVar("Group", RedisCluster, SentinelGroup)

# The `browser` fixture (Debian chromium through Playwright) for the dashboard and jobtrail.js tests.
pytest_plugins = ["tests.support.browser"]


@pytest.fixture(scope="session", autouse=True)
def builtin_kinds() -> None:
    """The built-in kinds, loaded as `jobtrail serve` and `jobtrail worker` load them at start.

    So a test that validates params or runs a handler in-process finds them whether or
    not an app was created before it.
    """
    load_kinds(Settings())


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        yield url
        return
    except redis.RedisError as exc:
        reason = f"no Redis answers at {url} ({exc})"
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except RuntimeError as exc:
        pytest.fail(f"{reason}, and no throwaway server could be started: {exc}", pytrace=False)
    print(f"\n{reason}; using a throwaway redis-server at {server.url}", file=sys.stderr)
    yield server.url
    server.kill()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server whose append-only file is fsynced on every write.

    So what Redis acknowledged survives a SIGKILL: tests kill and restart it at will,
    never the shared server.
    """
    server = RedisServer(tmp_path / "redis", None, "--appendonly", "yes", "--appendfsync", "always").start()
    yield server
    server.kill()


@pytest.fixture
def redis_to_take_down(topology: TopologyUnderTest, request: pytest.FixtureRequest
                       ) -> Iterator[RedisServer | WholeGroupDown]:
    """The Redis an outage test takes down: a durable throwaway server, or the whole Sentinel group or Cluster.

    Both have `url`, `kill()` and `start()`; a group a failed test left down is started again.
    """
    if topology.group is None:
        yield request.getfixturevalue("durable_redis")
        return
    group = WholeGroupDown(topology.group)
    yield group
    if group.down:
        group.start()


def session_group(start: Callable[[], Group], what: str) -> Iterator[Group]:
    """A group started once for the session and always stopped; a failure to start fails the test."""
    try:
        group = start()
    except RuntimeError as exc:
        pytest.fail(f"no {what} could be started: {exc}", pytrace=False)
    yield group
    group.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three primaries with a replica each, joined by `redis-cli --cluster create`; one per session."""
    yield from session_group(RedisCluster(tmp_path_factory.mktemp("cluster")).start, "Redis Cluster")


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One master, two replicas and three sentinels watching it as `jobtrail`; one per session."""
    yield from session_group(SentinelGroup(tmp_path_factory.mktemp("sentinel")).start, "Sentinel group")


@pytest.fixture
def topology(request: pytest.FixtureRequest, redis_url: str) -> TopologyUnderTest:
    """The topology this test runs on: `single` unless parametrised (`@over_topologies`).

    A group a previous test left with a node killed is restored first, so every test
    starts on a healthy one.
    """
    name = getattr(request, "param", "single")
    if name == "single":
        return TopologyUnderTest(name, redis_url, None)
    group: RedisCluster | SentinelGroup = request.getfixturevalue(
        {"cluster": "redis_cluster", "sentinel": "redis_sentinel"}[name]
    )
    group.restore()
    return TopologyUnderTest(name, group.url, group)


def delete_matching(redis_url: str, pattern: str) -> None:
    """Remove every key matching a SCAN pattern on one server: a test's cleanup."""
    TopologyUnderTest("single", redis_url, None).delete_matching(pattern)


@pytest.fixture
def prefix(topology: TopologyUnderTest) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards (on every node of a cluster)."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    if topology.group is not None:
        topology.group.restore()  # a test that killed a node: clean up on the healthy group
    topology.delete_matching(f"{value}:*")


@pytest.fixture
def settings(topology: TopologyUnderTest, prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=topology.url,
        prefix=prefix,
        artifact_dir=str(tmp_path / "artifacts"),
        retry_base_s=0.05,
        retry_max_s=0.2,
        sse_ping_s=1.0,
        hub_block_ms=1000,
        progress_interval_s=0.0,
        # Open, as most tests need no tenants; tests/test_auth.py configures keys.
        auth="off",
    )


@pytest.fixture
async def redis_client(topology: TopologyUnderTest) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's topology (a RedisCluster on a cluster, the master's on Sentinel)."""
    if topology.name == "single":
        client = aioredis.Redis.from_url(topology.url, decode_responses=True)
    else:
        client = Store(Settings(redis_url=topology.url), role="test").pooled()
    yield client
    await client.aclose()


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
async def services(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[Services]:
    """The services of a process, built as every jobtrail command builds them, on the test's Redis client."""
    built = build_services(settings, redis_client, Store(settings, role="test").dedicated(settings.hub_block_ms))
    yield built
    await built.hub.reader.aclose()  # redis_client closes itself


@pytest.fixture
def events(services: Services) -> EventLog:
    return services.events


class RunningApi:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str, services: Services) -> None:
        self.server = server
        self.task = task
        self.url = url
        self.services = services  # what the app was built with: its hub, its SSE slots, …

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_api() -> AsyncIterator[Callable[[Settings], asyncio.Future[RunningApi]]]:
    """Start the API on a free port in this event loop; stopped at teardown."""
    started: list[RunningApi] = []

    async def start(settings: Settings) -> RunningApi:
        services = open_services(settings, role="api")
        # The HTTP protocol `jobtrail serve` runs (app/api/protocol.py), not uvicorn's own.
        config = uvicorn.Config(
            create_app(settings, services), host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1,
            http=protocol_class(settings),
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        api = RunningApi(server, task, f"http://127.0.0.1:{port}", services)
        started.append(api)
        return api

    yield start  # type: ignore[misc]
    for api in started:
        if not api.task.done():
            await api.stop()


@pytest.fixture
async def api(start_api: Callable[[Settings], asyncio.Future[RunningApi]], settings: Settings) -> RunningApi:
    return await start_api(settings)


@pytest.fixture
async def client(api: RunningApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        yield http


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `jobtrail worker` processes the way a user would; killed at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(processes)}.log", "wb")  # noqa: SIM115 - the process's, for its life
        process = subprocess.Popen(
            [sys.executable, "-m", "jobtrail.cli", "worker"], cwd=ROOT, env=worker_env(settings), stdout=log, stderr=log
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

"""The test harness's Sentinel group and Cluster are what they claim, and the Store reaches each.

The rest of the suite trusts `@over_topologies` to mean three different deployments: these
tests check that the cluster really spreads keys over three primaries with a replica each,
that the Sentinel master really replicates to two replicas, and that a client the Store
opens from each REDIS_URL reads and writes there.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import MaxConnectionsError

from jobtrail.config import Settings
from jobtrail.keys import Keys
from jobtrail.store import Store
from tests.support.topologies import RedisCluster, SentinelGroup, TopologyUnderTest, over_topologies, wait_until


def test_the_cluster_has_three_primaries_with_a_replica_each_covering_every_slot(redis_cluster: RedisCluster):
    assert len(redis_cluster.primary_nodes()) == 3
    roles = [node.info("replication")["role"] for node in redis_cluster.nodes]
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    with redis_cluster.primary_nodes()[0].client() as client:
        info = client.cluster("INFO")
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_ok"]) == 16384
    assert int(info["cluster_known_nodes"]) == 6


def test_jobs_keys_spread_over_the_primaries_and_each_jobs_keys_share_one_node(redis_cluster: RedisCluster):
    keys = Keys("harness")
    homes = {redis_cluster.node_for(keys.events(f"job-{n}")).port for n in range(30)}
    assert len(homes) == 3, "thirty job ids land on every primary"
    for n in range(5):
        job = f"job-{n}"
        assert len({redis_cluster.node_for(key).port for key in keys.all_job_keys(job)}) == 1


def test_the_sentinel_master_replicates_to_both_replicas(redis_sentinel: SentinelGroup):
    master = redis_sentinel.master()
    with master.client() as client:
        client.set("harness:replicated", "yes", ex=60)
    replicas = [node for node in redis_sentinel.servers if node is not master]
    assert len(replicas) == 2

    def replicated() -> bool:
        return all(replica.client().get("harness:replicated") == "yes" for replica in replicas)

    wait_until(replicated, 10, "the replicas did not receive the master's write")


@over_topologies
async def test_the_store_reads_and_writes_on_each_topology(topology: TopologyUnderTest, settings: Settings, keys: Keys):
    client = Store(settings).pooled()
    try:
        for n in range(20):
            await client.set(keys.job(f"j{n}"), str(n))
        assert [await client.get(keys.job(f"j{n}")) for n in range(20)] == [str(n) for n in range(20)]
        # A script over one job's keys: what the append does, on any topology.
        script = "redis.call('SET', KEYS[2], ARGV[1]); return redis.call('GET', KEYS[1])"
        assert await client.eval(script, 2, keys.job("j1"), keys.lease("j1"), "w") == "1"
        assert await client.get(keys.lease("j1")) == "w"
    finally:
        await client.aclose()


@over_topologies
def test_a_tests_keys_are_removed_from_every_node_afterwards(topology: TopologyUnderTest, keys: Keys):
    url = topology.url
    if topology.name == "cluster":
        assert isinstance(topology.group, RedisCluster)
        client: redis.Redis = redis.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", topology.group.nodes[0].port)], decode_responses=True
        )
    elif topology.name == "sentinel":
        assert isinstance(topology.group, SentinelGroup)
        client = topology.group.master().client()
    else:
        client = redis.Redis.from_url(url, decode_responses=True)
    with client:
        for n in range(30):
            client.set(keys.job(f"j{n}"), "x")
        topology.delete_matching(f"{keys.prefix}:*")
        assert [client.exists(keys.job(f"j{n}")) for n in range(30)] == [0] * 30


async def test_a_sentinel_group_with_passwords_is_reached_with_the_sentinel_password_setting(tmp_path, prefix):
    group = SentinelGroup(tmp_path / "sentinel", password="data-secret", sentinel_password="sentinel-secret").start()
    try:
        assert ":data-secret@" in group.url
        client = Store(Settings(redis_url=group.url, sentinel_password="sentinel-secret")).pooled()
        try:
            await client.set(f"{prefix}:x", "1", ex=60)
            assert await client.get(f"{prefix}:x") == "1"
        finally:
            await client.aclose()
        without = Store(Settings(redis_url=group.url)).pooled()
        try:
            # The sentinels refuse it, so no master is found: Redis is away, as far as jobtrail can tell.
            with pytest.raises(MasterNotFoundError, match="uthentication"):
                await without.get(f"{prefix}:x")
        finally:
            await without.aclose()
    finally:
        group.stop()


async def test_closing_a_sentinel_client_closes_its_connections_to_the_sentinels_too(redis_sentinel: SentinelGroup):
    store = Store(Settings(redis_url=redis_sentinel.url), role="closing")
    client = store.pooled()
    await client.ping()

    def ours(node) -> int:
        with node.client() as admin:
            return sum(entry.get("name") == store.client_name for entry in admin.client_list())

    assert sum(ours(node) for node in redis_sentinel.sentinels) >= 1
    assert ours(redis_sentinel.master()) == 1
    await client.aclose()
    wait_until(lambda: sum(ours(node) for node in [*redis_sentinel.sentinels, redis_sentinel.master()]) == 0,
               5, "a connection outlived its client")


async def test_a_cluster_client_opens_at_most_its_bound_per_node_and_closes_them_all(
    redis_cluster: RedisCluster, keys: Keys
):
    store = Store(Settings(redis_url=redis_cluster.url, redis_pool_size=2), role="bounded")
    client = store.pooled()

    def ours() -> dict[int, int]:
        counts = {}
        for node in redis_cluster.nodes:
            with node.client() as admin:
                counts[node.port] = sum(entry.get("name") == store.client_name for entry in admin.client_list())
        return counts

    try:
        # Sixty at once over many slots: every primary is asked, none gets more than 2 connections.
        results = await asyncio.gather(*(client.set(keys.job(f"j{n}"), n, ex=60) for n in range(60)),
                                       return_exceptions=True)
        # A full node pool does not queue: it refuses (a ConnectionError, so 503 / waited out).
        assert all(result is True or isinstance(result, MaxConnectionsError) for result in results), results
        opened = ours()
        assert sum(1 for count in opened.values() if count) == 3, f"one pool per primary: {opened}"
        # The bound, and on a startup node one more: the connection that read the slot map.
        assert max(opened.values()) <= 2 + 1, opened
        assert sorted(opened.values())[-2] <= 2, opened
    finally:
        await client.aclose()
    wait_until(lambda: sum(ours().values()) == 0, 5, "a connection outlived its client")

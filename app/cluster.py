"""redis-py's asyncio RedisCluster, made to recover from a killed primary under concurrent load.

With a few tasks sharing one client, redis-py (8.1) rides out a failover; with twenty, a
task's command fails with `AttributeError: 'NoneType' object has no attribute
'writelines'`, which is no Redis error (a 500 from the API, a worker's write not waited
out). Its connection was closed under it by another task's error handling, in two ways
(tests/test_cluster_recovery.py fails on either; each alone is not enough):

- a failed slot-map reload disconnects every connection of every node, and a CLUSTERDOWN,
  an uncovered slot, every fifth MOVED and a pipeline's connection error call `aclose()`,
  which does the same, connections in use included. Each task so cut off asks for a
  reload of its own. Here a reload is one at a time and shared (the tasks that need the
  map while one runs wait for it and share its outcome, success or failure, rather than
  each running another through the dead node's connect timeout), a failed reload leaves
  connections alone (the old map's nodes still serve every slot but the dead primary's),
  and an `aclose()` that redis-py calls from inside a command or a pipeline only asks for
  a reload before the next command; the owner's `aclose()` still closes everything.
- on a ConnectionError or TimeoutError, redis-py disconnects the failed node's idle
  connections while they are still in its free list; the close awaits the socket's, and
  meanwhile another task takes one (still connected, so it sends without reconnecting)
  and finds its writer gone when its write runs. `_disconnect_idle` takes them out of the
  free list first.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

# Set while this task runs a command or a pipeline of a FailoverAwareCluster: an aclose()
# then comes from redis-py's error handling, not from the client's owner.
_IN_COMMAND: contextvars.ContextVar[bool] = contextvars.ContextVar("jobtrail_cluster_in_command", default=False)


class ClusterLayoutUnavailable(RedisConnectionError):
    """No node gave a usable slot map: all asked are down, or a dead primary's slots are not taken over yet."""


class FailoverAwareCluster(RedisCluster):
    """RedisCluster with shared, serialised slot-map reloads that fail as a ConnectionError.

    Until a dead primary's replica has taken over, a reload fails with a bare
    RedisClusterException ("cannot be connected", "All slots are not covered"), which is
    neither a RedisError nor a ConnectionError. As one, it is what it means: Redis away for
    now (503 from the API, waited out by workers, app/patience.py), not a bug.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reload: asyncio.Future[None] | None = None

    async def initialize(self, additional_startup_nodes_info: list[tuple[str, int]] | None = None,
                         last_failed_node_name: str | None = None) -> RedisCluster:
        if not self._initialize:
            return self
        if self._reload is None:
            self._reload = asyncio.ensure_future(self._load(additional_startup_nodes_info, last_failed_node_name))
            # Retrieved here, so a reload whose waiters were all cancelled logs no warning.
            self._reload.add_done_callback(lambda done: done.cancelled() or done.exception())
        # Shielded: a waiter cancelled (its request's deadline) leaves the others' reload running.
        await asyncio.shield(self._reload)
        return self

    async def _load(self, additional_startup_nodes_info: list[tuple[str, int]] | None,
                    last_failed_node_name: str | None) -> None:
        try:
            await self.nodes_manager.initialize(additional_startup_nodes_info=additional_startup_nodes_info,
                                                last_failed_node_name=last_failed_node_name)
            await self.commands_parser.initialize(self.nodes_manager.default_node)
            self._initialize = False
        except RedisClusterException as exc:
            raise ClusterLayoutUnavailable(f"the cluster's slot map could not be loaded: {exc}") from exc
        finally:
            self._reload = None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        token = _IN_COMMAND.set(True)
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            _IN_COMMAND.reset(token)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _Pipeline(self, transaction)

    async def aclose(self) -> None:
        if _IN_COMMAND.get():
            self._initialize = True  # reload before the next command; others' connections stay
            return
        # The owner's close closes every connection, also while a reload is due (when
        # redis-py's own aclose would do nothing, since it counts as not connected).
        self._initialize = False
        await super().aclose()


class _Pipeline(ClusterPipeline):
    """A cluster pipeline whose error handling's `aclose()` only asks for a reload (see the module's docstring)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        token = _IN_COMMAND.set(True)
        try:
            return await super().execute(raise_on_error=raise_on_error, allow_redirections=allow_redirections)
        finally:
            _IN_COMMAND.reset(token)


async def _disconnect_idle(self: ClusterNode) -> None:
    """ClusterNode.disconnect_free_connections, without handing out a connection while it closes.

    redis-py's closes the free connections where they are, so a task can take one whose
    close is under way (see the module's docstring). Taken out of the free list for the
    close, a task that needs one meanwhile opens another, and they go back once closed:
    they reconnect on their next use, as before.
    """
    idle = list(self._free)
    self._free.clear()
    try:
        await asyncio.gather(*(connection.disconnect() for connection in idle), return_exceptions=True)
    finally:
        self._free.extend(idle)


# For every ClusterNode in the process: redis-py's NodesManager makes them, with no way to
# name a subclass.
ClusterNode.disconnect_free_connections = _disconnect_idle

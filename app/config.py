"""Configuration: one Struct, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from jobtrail.topology import parse_topology


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything jobtrail can be tuned with; see the README's configuration table."""

    redis_url: str | None = None
    # The sentinels' own password (AUTH to Sentinel), when REDIS_URL is redis+sentinel://;
    # the data nodes' credentials are in the URL.
    sentinel_password: str = ""
    prefix: str = "jt"
    host: str = "127.0.0.1"
    port: int = 8000
    retention_s: int = 7 * 24 * 3600
    max_body_bytes: int = 64 * 1024
    # 0: Store.POOL_SIZE on one server or Sentinel, whose pool waits for a free connection
    # (requests hold one only for their round trips, so a few serve any number of clients);
    # Store.CLUSTER_POOL_SIZE per node on a Cluster, whose pool refuses when it is full.
    redis_pool_size: Annotated[int, msgspec.Meta(ge=0)] = 0
    redis_timeout_s: float = 5.0
    sse_ping_s: float = 15.0
    sse_retry_ms: int = 2000
    sse_queue_size: int = 1000
    # How long the hub's pub/sub connection may stay silent before it is sent a PING (app/wakes.py).
    hub_block_ms: int = 5000
    # The hub reads every watched stream once per this long anyway: the safety net for a lost wake (app/hub.py).
    hub_catch_up_s: float = 30.0
    default_max_attempts: int = 3
    max_attempts_limit: int = 20
    progress_interval_s: float = 0.1
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    worker_concurrency: int = 10
    lease_ttl_s: float = 30.0
    # How long a worker waits for an unreachable (or read-only, or full) Redis before a
    # job's write fails its attempt (app/patience.py).
    redis_outage_s: float = 60.0
    # Replicas a submission or terminal event waits for (WAIT), and for how long at most
    # (app/replicawait.py); 0 replicas: no wait, as with one server.
    wait_replicas: Annotated[int, msgspec.Meta(ge=0)] = 0
    wait_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Unless set, embedded `jobtrail serve` uses a temporary directory instead (app/cli.py).
    artifact_dir: str = "artifacts"
    artifact_sweep_s: float = 300.0
    # Job index entries each sweeper pass checks (app/index_sweep.py).
    index_sweep_per_pass: int = 20_000
    broker_idle_ms: int = 600_000
    activity_maxlen: int = 100_000
    legacy_prefix: str = ""
    # Modules of job kinds to import at start, comma-separated (workers/kinds_loader.py).
    kinds: str = ""
    # Recovery of stalled jobs (workers/reaper.py).
    reaper_interval_s: float = 10.0
    pending_stale_s: float = 30.0
    # SIGTERM: how long a worker lets running jobs finish before releasing them.
    shutdown_timeout_s: float = 20.0
    # Access (app/auth.py): "auto" needs keys when REDIS_URL is set; "off" runs open.
    auth: str = "auto"
    api_keys: str = ""
    api_keys_file: str = ""
    token_secret: str = ""
    token_ttl_s: int = 300
    token_max_ttl_s: int = 3600
    # Limits (app/limits.py).
    max_params_bytes: int = 16 * 1024
    sse_connections_per_tenant: int = 100
    # How long an SSE slot outlives its API process; each process renews its slots every third of it.
    sse_slot_ttl_s: float = 15.0
    submissions_per_minute: int = 600
    # /ws (app/api/ws.py): each socket takes one of its tenant's SSE connection slots too.
    ws_max_subscriptions: int = 100
    ws_max_message_bytes: int = 4096
    # Frames queued for one socket before the subscription that would add more ends `too slow`.
    ws_queue_size: int = 1000
    # Bad client messages a socket may send in a minute; one more closes it (1008).
    ws_max_errors: int = 10
    # WebSocket ping frames from `jobtrail serve`; a peer that does not answer within as long is dropped.
    ws_ping_s: float = 20.0
    # The export service's routes (/api/exports, app/api/legacy.py), for its clients during a switch-over.
    legacy_routes: Literal["on", "off"] = "off"
    # Metrics (app/metrics.py): a `tenant` label on the per-job metrics; /metrics served
    # openly on a listener of its own (`host:port`, the API's); a worker's metrics port.
    metrics_tenant_label: Literal["on", "off"] = "off"
    metrics_bind: str = ""
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    # The event loop of `serve` and `worker` (app/eventloop.py), and the HTTP/1.1 parser of
    # `serve` (app/api/protocol.py): the C ones by default, the pure-Python ones one setting away.
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    http: Literal["httptools", "h11"] = "httptools"

    def __post_init__(self) -> None:
        # A malformed REDIS_URL fails here, when settings are read, not at the first command.
        if self.redis_url:
            parse_topology(self.redis_url)

    @property
    def embedded(self) -> bool:
        """True when no REDIS_URL is set: API, worker and a Redis stand-in share one process."""
        return not self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from REDIS_URL and JOBTRAIL_* variables; bad values raise ValueError."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        for name in cls.__struct_fields__:
            raw = env.get(f"JOBTRAIL_{name.upper()}")
            if raw is not None and name != "redis_url":
                values[name] = raw
        try:
            # strict=False parses "8000" as an int and "0.5" as a float.
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid configuration: {exc}") from None

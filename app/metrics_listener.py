"""A listener of its own for `/metrics`: prometheus_client's HTTP server, on a thread.

A worker serves its metrics this way (`jobtrail worker --metrics-port`), and the API too
when JOBTRAIL_METRICS_BIND is set. It answers without a key, any path with the metrics:
it is meant for an address only a scraper reaches. What it serves is what `Metrics`
collects; `jobtrail_jobs`, which reads Redis, is counted on the process's event loop
(app/metrics.py, LiveJobsCollector).

One server per process. `jobtrail worker` is one process (taskiq's receiver runs in its
event loop; nothing forks), so one port per worker process: prometheus_client's
multiprocess mode, for forked workers that share one port, is not needed.
"""

from __future__ import annotations

import asyncio
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from jobtrail.auth import ConfigError
from jobtrail.metrics import Metrics


def parse_bind(bind: str, setting: str = "JOBTRAIL_METRICS_BIND") -> tuple[str, int]:
    """(host, port) of `host:port` or `[v6]:port`; ConfigError naming `setting` when it is neither."""
    host, _, port = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{setting} must be host:port (e.g. 127.0.0.1:9100), not {bind!r}")
    return host, int(port)


class MetricsListener:
    """prometheus_client's HTTP server for `metrics` on `host`:`port`, from `start` until `stop`."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self._server: WSGIServer | None = None

    def start(self) -> None:
        """Listen (OSError when the address is taken or not ours), from the process's event loop.

        Its scrapes come on the server's threads; what needs Redis is counted on this loop.
        """
        self.metrics.count_on(asyncio.get_running_loop())
        self._server, _ = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        self.port = self._server.server_port  # the one the system chose, when asked for port 0

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

"""The HTTP API: REST for jobs, SSE for their events, health probes."""

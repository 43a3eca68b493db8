"""The short chaos run (bench/chaos.py runs the long one): killed and frozen workers lose
no job and corrupt none, and SSE clients that drop and resume see every event exactly once.

On one server, a Sentinel group and a Cluster: the same processes, on each topology's REDIS_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, render, run_chaos
from tests.support.topologies import TopologyUnderTest, over_topologies

pytestmark = pytest.mark.e2e


@over_topologies
async def test_killed_workers_lose_no_job_and_resuming_sse_clients_see_every_event_once(
    topology: TopologyUnderTest, prefix: str, tmp_path: Path
) -> None:
    config = ChaosConfig(
        redis_url=topology.url,
        prefix=prefix,
        run_dir=str(tmp_path),
        jobs=16,
        workers=2,
        seed=7,
        kills=4,
        terms=1,
        # Frozen past their leases, then resumed: their writes must not land in the
        # attempt that replaced theirs (the append script's attempt fence).
        pauses=2,
        signal_every_s=1.2,
        submit_over_s=3.0,
        sse_share=0.5,
        steps=(10, 25),
        delay_ms=(150, 300),
        concurrency=6,
        deadline_s=60.0,
    )

    report = await run_chaos(config)

    print(render(report))
    assert report.violations == [], render(report)
    assert (report.lost, report.duplicates, report.stale, report.mismatched, report.stuck) == (0, 0, 0, 0, 0)
    assert report.kills == config.kills, render(report)
    assert report.interrupted > 0, render(report)
    assert report.reconnects > 0, render(report)

"""The `jobtrail` command as a user runs it: configuration and repair."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobtrail.config import Settings
from jobtrail.events import EventType
from tests.support.env import ROOT, worker_env
from tests.support.topologies import over_topologies


def jobtrail(settings, *args):
    return subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", *args],
        cwd=ROOT, env=worker_env(settings), capture_output=True, text=True,
        timeout=60,
    )


def test_settings_come_from_the_environment():
    settings = Settings.from_env({"REDIS_URL": "redis://h:1/2", "JOBTRAIL_PREFIX": "x", "JOBTRAIL_PORT": "9000",
                                  "JOBTRAIL_SSE_PING_S": "2.5"})
    read = (settings.redis_url, settings.prefix, settings.port, settings.sse_ping_s)
    assert read == ("redis://h:1/2", "x", 9000, 2.5)
    assert not settings.embedded and Settings.from_env({}).embedded


def test_a_bad_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="port"):
        Settings.from_env({"JOBTRAIL_PORT": "eighty"})


@over_topologies
async def test_repair_check_reports_a_wrong_hash_and_repair_fixes_it(settings, events, redis_client, keys):
    await events.append("good", EventType.SUBMITTED, {"kind": "demo", "params": {}, "max_attempts": 1})
    await events.append("bad", EventType.SUBMITTED, {"kind": "demo", "params": {}, "max_attempts": 1})
    await events.append("bad", EventType.STARTED, {"worker": "w", "attempt": 1}, attempt=1)
    await redis_client.hset(keys.job("bad"), mapping={"state": "pending", "event_count": "9"})

    check = jobtrail(settings, "repair", "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "bad: differs (event_count, state)" in check.stdout and "good:" not in check.stdout
    assert await redis_client.hget(keys.job("bad"), "state") == "pending", "--check changes nothing"

    fixed = jobtrail(settings, "repair")
    assert fixed.returncode == 0 and "bad: repaired" in fixed.stdout
    assert (await events.state("bad")).state == "running"
    assert jobtrail(settings, "repair", "--check").returncode == 0


async def test_repair_of_an_unknown_job_says_so(settings):
    result = jobtrail(settings, "repair", "ghost")
    assert result.returncode == 1 and "ghost: no such job" in result.stdout


@over_topologies
async def test_repair_reports_an_entry_that_is_no_event_and_checks_the_rest(settings, events, redis_client, keys):
    await events.append("good", EventType.SUBMITTED, {"kind": "demo", "params": {}, "max_attempts": 1})
    await events.append("bad", EventType.SUBMITTED, {"kind": "demo", "params": {}, "max_attempts": 1})
    await redis_client.xadd(keys.events("bad"), {"type": "log", "at": "1", "v": "1", "attempt": "0", "data": "[1"})

    result = jobtrail(settings, "repair", "--check")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad: stream is corrupt, not repaired" in result.stdout
    assert "2 checked, 0 mismatched, 1 not repairable" in result.stdout
    assert "Traceback" not in result.stderr

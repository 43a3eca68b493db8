"""The benchmark suite starts, parses its options, and runs a cheap row end to end.

Not a timed test: it checks that `python -m bench` works against its own redis-server and
prints its table, not how fast anything is. The BullMQ rows are not run here (CI installs
no npm packages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tests.support.env import ROOT


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_the_bench_explains_its_options():
    done = bench("--help")
    assert done.returncode == 0, done.stderr
    for option in ("--only", "--reps", "--quick", "--json"):
        assert option in done.stdout


def test_an_unknown_row_is_refused_with_the_rows_to_choose_from():
    done = bench("--only", "w9")
    assert done.returncode == 2
    assert "unknown rows ['w9']" in done.stderr and "replay" in done.stderr


def test_a_quick_run_of_the_append_row_prints_its_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    done = bench("--quick", "--only", "append", "--reps", "1", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| row | jobtrail | reference | ratio |")
    (row,) = [line for line in lines if line.startswith("| append script")]
    assert "bare XADD" in row and "error" not in row
    report = json.loads(out.read_text())
    (entry,) = report["rows"]
    assert entry["id"] == "append" and entry["jobtrail"] > 0 and entry["reference"] > 0
    assert len(report["samples"]["append"]["append.lua EVALSHA"]) == 1


def test_a_row_that_fails_says_why_in_the_table_and_the_run_exits_1(tmp_path):
    """Without redis-benchmark on PATH the append row cannot run: the table says so, nothing crashes."""
    only_redis = tmp_path / "bin"
    only_redis.mkdir()
    (only_redis / "redis-server").symlink_to(shutil.which("redis-server"))
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "append", "--reps", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": str(only_redis)})
    assert done.returncode == 1, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| append script")]
    assert "error: RuntimeError: redis-benchmark is not installed (apt-get install redis-tools)" in row

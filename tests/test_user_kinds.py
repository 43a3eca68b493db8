"""Kinds from a team's own code, in real `jobtrail serve` and `jobtrail worker` processes.

The modules come from JOBTRAIL_KINDS or --kinds (tests/user_kinds/), from the current
directory (the README's walkthrough), or from an entry point of a distribution that pip
installed. Everything is observed over HTTP, as a client sees it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobtrail.config import Settings
from tests.support.env import ROOT, worker_env

pytestmark = pytest.mark.e2e

USER_KINDS = "tests.user_kinds.acme_jobs"
FINISH_S = 30.0
# The package as handler authors import it: `app` today, `jobtrail` once the package is named so.
PACKAGE = Settings.__module__.partition(".")[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """`jobtrail` processes of one test, started with `python -m app.cli`; killed at teardown."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str, cwd: Path = ROOT, flags: tuple[str, ...] = (), **env: str) -> Path:
        """Start `jobtrail ARGS...`; the path of its log (stdout and stderr)."""
        log = self.tmp_path / f"{args[0]}-{len(self.started)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, *flags, "-m", "jobtrail.cli", *args], cwd=cwd,
                env={**worker_env(self.settings), "JOBTRAIL_AUTH": "off", **env}, stdout=out, stderr=subprocess.STDOUT,
            )
        self.started.append((process, log))
        return log

    async def serve(self, *args: str, cwd: Path = ROOT, flags: tuple[str, ...] = (), **env: str) -> str:
        """Start `jobtrail serve` and wait until it answers; its base URL."""
        port = free_port()
        log = self.start("serve", "--port", str(port), *args, cwd=cwd, flags=flags, **env)
        process = self.started[-1][0]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + FINISH_S
        async with httpx.AsyncClient(base_url=url) as http:
            while time.monotonic() < deadline:
                assert process.poll() is None, f"jobtrail serve exited; log:\n{log.read_text()}"
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"jobtrail serve did not become ready; log:\n{log.read_text()}")

    def close(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(settings, tmp_path)
    yield started
    started.close()


async def finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job's state once it is terminal."""
    deadline = time.monotonic() + FINISH_S
    while (job := (await http.get(f"/jobs/{job_id}")).json())["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {FINISH_S}s"
        await asyncio.sleep(0.1)
    return job


async def submitted(http: httpx.AsyncClient, kind: str, params: dict[str, Any]) -> str:
    response = await http.post("/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def history(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/jobs/{job_id}/history", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["events"]


async def test_kinds_named_by_jobtrail_kinds_or_kinds_flag_run_end_to_end_in_serve_and_a_worker(procs):
    url = await procs.serve(JOBTRAIL_KINDS=USER_KINDS)
    # --kinds replaces JOBTRAIL_KINDS: the broken module is not imported.
    worker_log = procs.start("worker", "--kinds", USER_KINDS, JOBTRAIL_KINDS="tests.user_kinds.broken")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        listed = {k["name"]: k for k in (await http.get("/kinds")).json()["kinds"]}
        assert set(listed) == {"acme.invoice", "acme.typo", "demo", "export.pdf", "export.zip"}
        invoice = listed["acme.invoice"]
        assert invoice["phases"] == ["collect", "render", "upload"]
        assert invoice["description"] == "An invoice for `customer`, one line at a time."
        assert invoice["params_schema"]["$defs"]["InvoiceParams"]["required"] == ["customer"]

        refused = await http.post("/jobs", json={"kind": "acme.invoice", "params": {"customer": 5}})
        assert refused.status_code == 422 and "customer" in refused.json()["detail"]

        job_id = await submitted(http, "acme.invoice", {"customer": "Globex", "lines": 4})
        job = await finished(http, job_id)
        assert job["state"] == "succeeded", job
        assert job["result"] == {"customer": "Globex", "lines": 4}
        events = await history(http, job_id)
        assert [e["data"]["phase"] for e in events if e["type"] == "phase"] == ["collect", "render", "upload"]

        typo = await finished(http, await submitted(http, "acme.typo", {}))
        assert typo["state"] == "failed"
        assert typo["error"] == {
            "type": "UnknownPhase",
            "message": "phase 'rendering' is not one of kind 'acme.typo''s phases: collect, render",
        }
        assert "retrying" not in [e["type"] for e in await history(http, typo["id"])], "a bug is not retried"
    assert "job kinds: acme.invoice, acme.typo, demo, export.pdf, export.zip" in worker_log.read_text()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_module_that_fails_to_import_stops_the_process_naming_the_module_with_the_traceback(settings, command):
    done = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", command], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**worker_env(settings), "JOBTRAIL_AUTH": "off",
             "JOBTRAIL_KINDS": f"{USER_KINDS}, tests.user_kinds.broken"},
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == (
        f"jobtrail {command}: cannot load job kinds from module 'tests.user_kinds.broken' "
        "(named by JOBTRAIL_KINDS or --kinds): KeyError: 'ACME_BILLING_URL'"
    ), done.stderr
    assert lines[1] == "Traceback (most recent call last):"
    assert "kinds_loader.py" not in done.stderr and "importlib" not in done.stderr, "from the module on"
    assert f"{os.sep}tests{os.sep}user_kinds{os.sep}broken.py\", line 7, in <module>" in done.stderr
    assert lines[-1] == "KeyError: 'ACME_BILLING_URL'"


def test_a_module_that_does_not_exist_stops_the_worker_naming_it(settings):
    done = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "worker", "--kinds", "acme.jobz"],
        cwd=ROOT, capture_output=True, text=True,
        timeout=60, env=worker_env(settings),
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        "jobtrail worker: cannot load job kinds from module 'acme.jobz' (named by JOBTRAIL_KINDS or --kinds): "
        "ModuleNotFoundError: No module named 'acme'"
    ), done.stderr
    assert len(done.stderr.splitlines()) == 1, "no traceback of importlib's own"


def hand_made_wheel(directory: Path) -> Path:
    """A wheel of `acme-receipts` declaring two entry points: a module, and a callable that registers a kind."""
    sources = {
        "acme_receipts/__init__.py": "",
        "acme_receipts/receipts.py": textwrap.dedent(f'''
            import msgspec
            import {PACKAGE} as jobtrail

            class ReceiptParams(msgspec.Struct, forbid_unknown_fields=True):
                amount_cents: int

            @jobtrail.kind("acme.receipt", ReceiptParams)
            async def receipt(params, ctx):
                return {{"amount_cents": params.amount_cents}}
        '''),
        "acme_receipts/stamps.py": textwrap.dedent(f'''
            import msgspec
            import {PACKAGE} as jobtrail

            class StampParams(msgspec.Struct, forbid_unknown_fields=True):
                text: str

            def register():
                @jobtrail.kind("acme.stamp", StampParams, phases=["ink", "press"])
                async def stamp(params, ctx):
                    await ctx.phase("ink")
                    await ctx.phase("press", params.text)
                    return {{"stamped": params.text}}
        '''),
        "acme_receipts-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: acme-receipts\nVersion: 1.0\n",
        "acme_receipts-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        "acme_receipts-1.0.dist-info/entry_points.txt": "[jobtrail.kinds]\nreceipts = acme_receipts.receipts\n"
        "stamps = acme_receipts.stamps:register\n",
    }
    record = "".join(f"{name},,\n" for name in sources) + "acme_receipts-1.0.dist-info/RECORD,,\n"
    wheel = directory / "acme_receipts-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**sources, "acme_receipts-1.0.dist-info/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


async def test_entry_points_of_an_installed_distribution_register_kinds_in_serve_and_the_worker(procs, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
         str(hand_made_wheel(tmp_path))], check=True, timeout=120,
    )
    url = await procs.serve(PYTHONPATH=str(site))
    procs.start("worker", PYTHONPATH=str(site))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        listed = {k["name"]: k for k in (await http.get("/kinds")).json()["kinds"]}
        assert {"acme.receipt", "acme.stamp"} <= set(listed)
        assert listed["acme.stamp"]["phases"] == ["ink", "press"]
        stamp = await finished(http, await submitted(http, "acme.stamp", {"text": "PAID"}))
        receipt = await finished(http, await submitted(http, "acme.receipt", {"amount_cents": 1250}))
    assert (stamp["state"], stamp["result"], stamp["phase"]) == ("succeeded", {"stamped": "PAID"}, "press")
    assert (receipt["state"], receipt["result"]) == ("succeeded", {"amount_cents": 1250})


def readme_module() -> str:
    """The module of the README's "Your own jobs" walkthrough, importing the package by today's name."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Your own jobs\n"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    assert "\nimport jobtrail\n" in code
    return code.replace("\nimport jobtrail\n", f"\nimport {PACKAGE} as jobtrail\n")


async def test_a_module_in_the_current_directory_is_found_though_the_console_script_does_not_add_it(
    procs, tmp_path
):
    project = tmp_path / "acme"
    project.mkdir()
    (project / "acme_jobs.py").write_text(readme_module())
    # `-P` leaves the current directory off sys.path, as the `jobtrail` console script does;
    # PYTHONPATH stands in for the installed package.
    env = {"JOBTRAIL_KINDS": "acme_jobs", "PYTHONPATH": str(ROOT)}
    url = await procs.serve(cwd=project, flags=("-P",), **env)
    procs.start("worker", cwd=project, flags=("-P",), **env)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        job = await finished(http, await submitted(http, "acme.invoice", {"customer": "Initech"}))
    assert (job["state"], job["result"], job["phase"]) == ("succeeded", {"customer": "Initech", "lines": 3}, "upload")
    assert job["message"] == "invoices/initech.pdf"

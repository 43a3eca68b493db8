"""The processes a row runs (jobtrail serve and worker, the bare app, node), and their CPU time.

Each starts in a session of its own, so stopping it stops whatever it started too, and
every process is stopped in a `finally` (Processes is a context manager): a failed row
leaves nothing running. CPU time is utime+stime from /proc/<pid>/stat, over the process
and its descendants, read before and after the measured part of a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent  # where the processes run: `bench` imports from there
_TICKS = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2:].split()[1])
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU of these processes and their descendants, in seconds."""
    tree, total, todo = _children(), 0, list(pids)
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def local_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of the process's established TCP connections to 127.0.0.1:`remote_port`."""
    inodes = socket_inodes(pid)
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if inode in inodes and state == "01" and int(remote.split(":")[1], 16) == remote_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


class Processes:
    """Started processes, each logging into run_dir; all stopped when the block ends."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(process)
        return process

    def python(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, *args], env)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.run_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        """SIGTERM the process's group, SIGKILL it after `grace_s`."""
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace_s)
        _signal_group(process, signal.SIGKILL)  # anything of its group still there
        process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)
        self.started.clear()

    async def wait_http(self, process: subprocess.Popen[bytes], name: str, url: str, timeout: float = 60) -> None:
        """Until GET `url` answers 200; RuntimeError with the log's tail if the process exits or it never does."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s:\n{self.log_tail(name)}")

    async def wait_log(self, process: subprocess.Popen[bytes], name: str, text: str, timeout: float = 60) -> None:
        """Until the process's log holds `text` (a worker's "Listening started", node's "ready")."""
        deadline = time.monotonic() + timeout
        path = self.run_dir / f"{name}.log"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            if path.exists() and text.encode() in path.read_bytes():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} did not log {text!r} within {timeout:.0f} s:\n{self.log_tail(name)}")


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)

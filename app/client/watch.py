"""`jobtrail watch`: one job's progress as a live terminal bar, until it ends.

It reads the job's state (one GET), then follows its event stream from the state's
last event with the client's `events()`, which resumes by itself after the network
drops or the API restarts; the bar shows "reconnecting" meanwhile. A last GET gives
the outcome. The exit code says how the job ended (see `EXIT_*`).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

from jobtrail.client.errors import ClientError
from jobtrail.client.models import Event, Gap, JobState
from jobtrail.client.sync import Client

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2
EXIT_NOT_FOUND, EXIT_UNAUTHORIZED, EXIT_ERROR = 3, 4, 5
EXIT_BY_STATE = {"succeeded": EXIT_SUCCEEDED, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "retrying": "yellow",
          "reconnecting": "yellow", "pending": "dim", "running": "blue"}


_CAUSES = {"stream_dropped": "connection lost", "stream_closed": "stream closed by the API",
           "unreachable": "API unreachable"}


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WatchView:
    """The bar and the lines above it; `show` takes each item `events()` yields."""

    def __init__(self, console: Console, state: JobState) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            TextColumn("{task.fields[state]}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TextColumn("[cyan]{task.fields[phase]}"),
            # Bounded, so that a long message never squeezes the bar away.
            TextColumn("{task.fields[message]}", table_column=Column(max_width=44, no_wrap=True, overflow="ellipsis")),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=8,
        )
        self.task: TaskID = self.progress.add_task(
            escape(f"{state.kind} {state.id[:12]}"), total=1.0, state="", phase="", message=""
        )
        self.state = state.state
        self.attempt = f"{state.attempt}/{state.max_attempts}" if state.attempt else ""
        self.last_event: Event | None = None
        self._update(state.progress, phase=state.phase or "", message=state.message or "")

    def __enter__(self) -> WatchView:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def _update(self, progress: float | None = None, **fields: str) -> None:
        label = f"{self.state} {self.attempt}".strip() if self.state in ("running", "retrying") else self.state
        shown: dict[str, Any] = {name: escape(value) for name, value in fields.items()}
        shown["state"] = f"[{_STYLE.get(self.state, 'white')}]{escape(label)}[/]"
        self.progress.update(self.task, completed=progress, **shown)

    def show(self, item: Event | Gap) -> None:
        if isinstance(item, Gap):
            self.console.print("[yellow]some early events were trimmed from the job's history[/]")
            self.state = item.state.state
            self._update(item.state.progress, phase=item.state.phase or "", message=item.state.message or "")
            return
        self.last_event = item
        data = item.data
        if item.type == "started":
            self.state, self.attempt = "running", f"{item.attempt}/{data.get('max_attempts', '') or '?'}"
            self.attempt = self.attempt.removesuffix("/?")
            self._update(0.0, message=f"started on {data.get('worker', '?')}")
        elif item.type == "progress":
            fields = {"message": str(data["message"])} if data.get("message") else {}
            if data.get("phase"):
                fields["phase"] = str(data["phase"])
            self._update(float(data.get("progress", 0.0)), **fields)
        elif item.type == "phase":
            self._update(phase=str(data.get("phase", "")), message=str(data.get("message") or ""))
        elif item.type == "log":
            level, text = str(data.get("level", "info")), str(data.get("message", ""))
            self.console.print(f"[dim]{escape(level)}[/] {escape(text)}")
            self._update()
        elif item.type == "cancel_requested":
            self._update(message="cancel requested")
        elif item.type == "retrying":
            self.state = "retrying"
            error = data.get("error") or {}
            self._update(message=f"{error.get('type', 'error')}: {error.get('message', '')}; "
                                 f"retrying in {data.get('delay_s', 0):g} s")
        elif item.terminal:
            self.state = item.type
            self._update(1.0 if item.type == "succeeded" else None)
        else:
            self._update()

    def reconnecting(self, delay: float, why: ClientError) -> None:
        """The client's `on_reconnect`: the bar says so until the next event."""
        shown, self.state = self.state, "reconnecting"
        cause = _CAUSES.get(why.code) or f"API answered {why.status}"
        self._update(message=f"{cause}; reconnecting in {delay:.1f} s")
        self.state = shown

    def outcome(self, final: JobState) -> str:
        """The last line: how the job ended."""
        style = _STYLE.get(final.state, "white")
        if final.state == "succeeded":
            detail = f"result {_short(final.result)}" if final.result is not None else ""
        elif final.state == "failed":
            error = final.error or {}
            detail = f"{error.get('type', 'error')}: {error.get('message', '')}"
        else:
            reason = self.last_event.data.get("reason") if self.last_event and self.last_event.terminal else None
            detail = f"reason: {reason}" if reason else ""
        return f"[bold {style}]{final.state}[/] job {escape(final.id)} {escape(detail)}".rstrip()


def watch(client: Client, job_id: str, console: Console) -> int:
    """Show the job until it ends; the exit code of its outcome. Raises the client's errors."""
    state = client.get(job_id)
    with WatchView(console, state) as view:
        if not state.terminal:
            for item in client.events(job_id, state.last_event_id or None, on_reconnect=view.reconnecting):
                view.show(item)
        final = client.get(job_id)
    console.print(view.outcome(final))
    return EXIT_BY_STATE.get(final.state, EXIT_ERROR)

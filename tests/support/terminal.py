"""A real terminal for CLI tests: a tmux session on a socket of its own.

`screen()` is the pane as a person sees it (rendered, escape codes applied), so a
test asserts on what is on the screen, not on the bytes that drew it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import uuid


class Terminal:
    def __init__(self, width: int = 120, height: int = 12) -> None:
        self.socket = f"jt-test-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height
        self.screens: list[str] = []  # every screen a wait looked at, for the failure message

    async def _tmux(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "tmux", "-L", self.socket, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"tmux {args[0]} failed: {err.decode().strip()}")
        return out.decode()

    async def run(self, argv: list[str], *, cwd: str, env: dict[str, str], unset: tuple[str, ...] = ()) -> None:
        """Start `argv` in the terminal; when it exits, `EXIT=<code>` is printed under its output."""
        # COLUMNS and LINES would override the terminal's own size (rich reads them).
        unset = ("COLUMNS", "LINES", *unset)
        command = shlex.join(["env", *(f"-u{name}" for name in unset), *(f"{k}={v}" for k, v in env.items()), *argv])
        shell = f"cd {shlex.quote(cwd)} && {command}; echo EXIT=$?; sleep 600"
        await self._tmux("new-session", "-d", "-x", str(self.width), "-y", str(self.height), shell)

    async def screen(self) -> str:
        return await self._tmux("capture-pane", "-p")

    async def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        """The screen, once it shows every one of `texts`; fails with the last screen if it never does."""
        screen = ""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    screen = await self.screen()
                    if all(text in screen for text in texts):
                        break
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"the screen never showed {texts}; it shows:\n{screen}") from None
        self.screens.append(screen)
        return screen

    async def exit_code(self, timeout: float = 20.0) -> int:
        screen = await self.wait_for("EXIT=", timeout=timeout)
        match = re.search(r"EXIT=(\d+)", screen)
        assert match, screen
        return int(match[1])

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self._tmux("kill-server")

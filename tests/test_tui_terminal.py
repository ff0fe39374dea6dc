"""The dashboard in a real terminal: `tartok-tui run` on a pseudo-terminal, driven by keys.

Textual draws to the pty as to any terminal; the test reads what it draws (escape codes
stripped), presses keys as a user would, and checks the process's exit code.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.exit_codes import ExitCode

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty"),
]

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\x1b\][^\x07]*\x07")


class Terminal:
    """A child process on a pty of a given size, and what it has drawn so far."""

    def __init__(self, args: list[str], env: dict[str, str], rows: int = 45, cols: int = 170):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the program, on the pty
            os.execvpe(args[0], args, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.seen = b""
        self.status: int | None = None

    def text(self) -> str:
        return ANSI.sub(b"", self.seen).decode("utf-8", "replace")

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:  # the child closed the pty
                    return

    def wait_for(self, needle: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < end, f"{needle!r} never drawn; last: {self.text()[-1500:]}"
            self.pump(0.2)

    def press(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait_exit(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pump(0.5)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"did not exit; last: {self.text()[-1500:]}")


def test_the_dashboard_in_a_real_terminal_pauses_a_worker_and_quits_cleanly_with_130(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        write_emilia_tar(inp / f"EN-B{i:06d}.tar", 6, seed=i, batch=i, audio_format="flac",
                         min_s=1.0, max_s=2.0)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARTOK_")}
    env.update(TERM="xterm-256color", TARTOK_FAULT_INJECT="slow_ms=400", COLUMNS="170",
               LINES="45")  # fmt: skip
    args = [sys.executable, "-m", "tartok_tui", "run", "-i", str(inp), "-o", str(out),
            "-m", str(tiny_model_dir), "--device", "cpu", "--num-proc", "2"]  # fmt: skip
    term = Terminal(args, env)
    term.wait_for("Slot", 120)  # the worker table's header
    term.wait_for("slot 0  cpu  pid", 120)  # the detail line: slot 0's row is selected
    term.wait_for(".tar   ", 120)  # a worker holds a tar
    term.press("p")
    term.wait_for("paused", 60)  # shown once the worker acknowledged
    term.press("q")
    term.wait_for("Stop the run?", 30)
    term.press("y")
    code = term.wait_exit(120)
    assert code == ExitCode.INTERRUPTED, term.text()[-2000:]
    # Back in the shell's own screen: the run's summary is printed after the dashboard.
    assert "interrupted" in term.text()[-3000:].lower()

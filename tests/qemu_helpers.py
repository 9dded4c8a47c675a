"""Helpers any test area can import (``from qemu_helpers import qemu_img``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from qdisk.system.processes import alive as process_alive


def qemu_img(*args: str) -> str:
    """Run the real qemu-img; fail the test with its stderr if it fails."""
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"qemu-img {' '.join(args)}: {result.stderr}"
    return result.stdout


def kill_and_wait(pid: int, *, timeout: float = 10.0) -> None:
    """SIGKILL a daemonized QEMU and wait until it is gone.

    It is not our child (it double-forked), so it cannot be waited for; a zombie
    counts as gone (``qdisk.system.processes.alive``)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.025)

"""Helpers any test area can import (``from qemu_helpers import qemu_img``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from qdisk.system.processes import alive as process_alive
from qdisk.system.tools import process_memory

MIB = 2**20
# The stacks QEMU maps besides its caches, each right above its guard page: a thread's
# (glibc's default under the 8 MiB stack limit) and a coroutine's (COROUTINE_STACK_SIZE).
STACK_SIZES = (8 * MIB, 1 * MIB)


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


def address_space(pid: int) -> int:
    """QEMU's address space (VmSize, which holds each qcow2 cache) without its threads' and
    coroutines' stacks: how many it has follows the load, not the caches (thread-pool
    workers come and go; the coroutine pool keeps as many as were alive at once). Under two
    busy loops on 2 cores they moved VmSize by up to 23 MiB between two reads of a test."""
    page = os.sysconf("SC_PAGE_SIZE")
    stacks, below = 0, (0, 0, "")
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(address, 16) for address in fields[0].split("-"))
        guarded = below[2] == "---p" and below[1] - below[0] == page and below[1] == start
        if guarded and fields[1] == "rw-p" and len(fields) == 5 and end - start in STACK_SIZES:
            stacks += end - start
        below = (start, end, fields[1])
    return process_memory(pid)["VmSize"] - stacks

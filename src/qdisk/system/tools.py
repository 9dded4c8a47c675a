"""Running the external programs (qemu-img, QEMU, fio).

One small wrapper: every failure becomes a :class:`~qdisk.errors.ToolError`
that names the program and carries QEMU's own message, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qdisk.errors import ToolError

log = logging.getLogger(__name__)

_QEMU_PREFIX = re.compile(r"^[\w./-]*qemu[\w-]*: ")


def run(argv: Sequence[str], *, timeout: float | None = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its result; raise ToolError if it cannot run or fails."""
    tool = argv[0]
    log.debug("running %s", " ".join(argv))
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolError(tool, "program not found (install it, or set its QDISK_* path)") from None
    except PermissionError:
        raise ToolError(tool, "program is not executable") from None
    except subprocess.TimeoutExpired:
        raise ToolError(tool, f"did not finish within {timeout:g} s") from None
    if check and result.returncode != 0:
        raise ToolError(tool, last_message(result.stderr) or f"exited with code {result.returncode}",
                        returncode=result.returncode, stderr=result.stderr)
    return result


def last_message(stderr: str) -> str:
    """QEMU's error message in ``stderr``, without the ``program: `` prefix.

    QEMU prints the error on a line prefixed with the program's name and may add
    unprefixed hint lines after it, so the first prefixed line that is not a
    warning is the message; output without such a line falls back to its last line.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        message = _QEMU_PREFIX.sub("", line)
        if message != line and not message.startswith("warning: "):
            return message
    return lines[-1] if lines else ""


@functools.cache
def qemu_version(program: str) -> tuple[int, int, int]:
    """The version of a QEMU program (``qemu-system-x86_64 --version``), as (major, minor, micro)."""
    out = run([program, "--version"], timeout=30).stdout
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise ToolError(program, f"cannot read a version from {out.strip()!r}")
    major, minor, micro = match.groups()
    return int(major), int(minor), int(micro or 0)


def qemu_machines(program: str) -> tuple[str, ...]:
    """The machine types a ``qemu-system`` offers (``-machine help``), as it lists them."""
    out = run([program, "-machine", "help"], timeout=30).stdout
    return tuple(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def process_memory(pid: int) -> dict[str, int]:
    """A process's address space and resident memory in bytes (``VmSize``, ``VmRSS``).

    QEMU reserves each qcow2 cache as address space when it opens the image, so
    VmSize shows a cache change at once, while VmRSS grows only as tables load.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    memory = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmSize", "VmRSS"):
            memory[name] = int(value.split()[0]) * 1024  # /proc counts in kB
    return memory

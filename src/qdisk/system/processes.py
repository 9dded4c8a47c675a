"""Other processes as ``/proc`` shows them: alive or not, their arguments, their open files.

A VM's QEMU is recognised by what it was told, not by how a path was spelled: a path in
its command line is resolved against the process's own working directory and compared
with ``os.path.realpath``, so a symlinked, relative or slash-ended ``QDISK_HOME`` finds
the same QEMU. Nothing here needs QEMU itself; a process this user may not inspect is
treated as unknown (never as "ours").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qdisk.qemuopts import unescape

_PROC = Path("/proc")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (QEMU is daemonized: not our child, its
    parent reaps it) counts as gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # The command name in parentheses may contain blanks; the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def argv(pid: int) -> list[str] | None:
    """The command line of ``pid`` (None when it is gone or not ours to read)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="surrogateescape").split("\0")[:-1] if raw else None


def _resolved(pid: int, path: str) -> str:
    """``path`` as process ``pid`` meant it (relative paths are relative to its cwd)."""
    if not os.path.isabs(path):
        try:
            path = os.path.join(os.readlink(_PROC / str(pid) / "cwd"), path)
        except OSError:
            pass
    return os.path.realpath(path)


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two spellings name the same place (links, ``..``, trailing slashes resolved);
    the last component need not exist."""
    return os.path.realpath(a) == os.path.realpath(b)


def mentions_path(pid: int, path: Path, *, prefix: str = "", suffix: str = "") -> bool:
    """Whether an argument of ``pid`` names ``path``: an argument equal to it, or holding
    it between ``prefix`` and ``suffix`` (``path=`` ... ``,`` in a QEMU option list)."""
    arguments = argv(pid)
    # Cheap test first: every spelling of the path ends in its file name.
    if arguments is None or not any(path.name in argument for argument in arguments):
        return False
    target = os.path.realpath(path)
    for argument in arguments:
        for candidate in _candidates(argument, prefix, suffix):
            if _resolved(pid, candidate) == target:
                return True
    return False


def _candidates(argument: str, prefix: str, suffix: str) -> Iterator[str]:
    yield argument
    if not prefix:
        return
    start = argument.find(prefix)
    while start >= 0:
        value_start = start + len(prefix)
        end = argument.find(suffix, value_start) if suffix else -1
        # QEMU doubles a ',' inside an option value: skip those when looking for the end.
        while suffix == "," and end >= 0 and argument.startswith(",,", end):
            end = argument.find(suffix, end + 2)
        value = argument[value_start:] if end < 0 else argument[value_start:end]
        yield unescape(value) if suffix == "," else value
        start = argument.find(prefix, value_start)


def pids() -> Iterator[int]:
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _open_files(pid: int) -> set[str]:
    fd_dir = _PROC / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return set()
    files = set()
    for fd in fds:
        try:
            files.add(os.readlink(fd_dir / fd))
        except OSError:
            continue  # closed meanwhile
    return files


@dataclass(frozen=True)
class Holder:
    """A process that has a file open."""

    pid: int
    command: str


def holders(path: str | os.PathLike[str]) -> list[Holder]:
    """Every live process (this user may inspect) with ``path`` open, itself excepted."""
    target = os.path.realpath(path)
    found = []
    for pid in pids():
        if pid == os.getpid():
            continue
        if target in _open_files(pid) and alive(pid):
            arguments = argv(pid) or ["?"]
            found.append(Holder(pid, os.path.basename(arguments[0])))
    return found

"""Crash-safe file writes and per-file locks.

A config write is atomic (temporary file in the same directory, fsync, rename,
fsync of the directory), so a reader or a process killed at any moment sees
either the old or the new file, never a torn one. Read-modify-write cycles hold
an exclusive ``flock`` on a lock file beside the config, so parallel writers
queue up instead of losing each other's changes.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qdisk.errors import QdiskError


class LockTimeout(QdiskError):
    """Another qdisk command held the lock for too long."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__(f"{path}: still locked by another command after {timeout:g} s")
        self.path = path


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that it is never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def locked(lock_path: Path, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if needed) for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(lock_path, timeout) from None
                time.sleep(0.01)
        yield
    finally:
        # Closing the descriptor releases the lock, also when the process dies.
        os.close(fd)

"""Fixtures of the snapshot area (helpers in snapshot_helpers.py): a home with a plain and
a volume-chain ``dir`` storage; every QEMU started is killed at teardown, also when a test
fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qemu_helpers import kill_and_wait
from snapshot_helpers import QEMU_ENV, SnapshotHome, make_home


@pytest.fixture
def snap_home(tmp_path: Path) -> SnapshotHome:
    return make_home(tmp_path)


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """QEMUs under TCG; the pids of those started (and of any pid file under tmp_path)
    are killed at the end."""
    monkeypatch.setenv("QDISK_ACCEL", "tcg")
    for name, value in QEMU_ENV.items():
        monkeypatch.setenv(name, value)
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid_file in tmp_path.glob("home/run/*.pid"):
            try:
                pid = int(pid_file.read_text())
                # A pid reused by another process is left alone.
                if str(tmp_path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except (OSError, ValueError):
                continue
        for pid in pids:
            kill_and_wait(pid)

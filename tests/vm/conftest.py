"""Fixtures of the VM area: a fresh QDISK_HOME under TCG, and no QEMU left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qemu_helpers import kill_and_wait


def _kill_vms_of(home: Path) -> None:
    """SIGKILL every QEMU whose pid file is under ``home/run`` and whose command line names
    that home (a pid reused by another process is left alone), and wait until it is gone."""
    for pid_file in (home / "run").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(home).encode() not in cmdline:
            continue
        kill_and_wait(pid)


@pytest.fixture
def vm_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty QDISK_HOME with QEMU under TCG; every QEMU started in it is killed at the
    end, also when the test fails."""
    monkeypatch.setenv("QDISK_ACCEL", "tcg")
    for variable in ("QDISK_QEMU_SYSTEM", "QDISK_QEMU_IMG"):
        monkeypatch.delenv(variable, raising=False)
    try:
        yield home
    finally:
        _kill_vms_of(home)


@pytest.fixture
def config_file(vm_home: Path) -> Path:
    """VM 100's config file (not created)."""
    return vm_home / "qemu-server" / "100.conf"

"""Fixtures of the QEMU area (helpers in cmdline_helpers.py): homes for QEMU commands, daemonized
QEMUs, and a paused QEMU to talk QMP to."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from cmdline_helpers import GOLDEN_DIR, QEMU_TIMEOUT, QemuHome
from qemu_helpers import kill_and_wait


@pytest.fixture
def qemu_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> QemuHome:
    """A home with the storages of cfg2cmd/storage.cfg (``@STORAGE@`` = tmp_path/storage)."""
    for variable in ("QDISK_QEMU_SYSTEM", "QDISK_QEMU_IMG", "QDISK_QEMU_STORAGE_DAEMON"):
        monkeypatch.delenv(variable, raising=False)
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    template = (GOLDEN_DIR / "storage.cfg").read_text()
    (home / "storage.cfg").write_text(template.replace("@STORAGE@", str(storage)))
    # The files a Proxmox VE host keeps under /etc/pve for Ceph and ZFS over iSCSI.
    shutil.copytree(GOLDEN_DIR / "pve", home, dirs_exist_ok=True)
    monkeypatch.setenv("QDISK_HOME", str(home))
    return QemuHome(tmp_path, home, storage)


@pytest.fixture
def daemonized_qemu() -> Iterator[Callable[[Sequence[str], Path], int]]:
    """Start a command that daemonizes (``-daemonize -pidfile``); returns the daemon's pid.
    Every daemon started is killed and waited for at teardown."""
    pids: list[int] = []

    def start(argv: Sequence[str], pidfile: Path) -> int:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=QEMU_TIMEOUT)
        if pidfile.exists():
            pids.append(int(pidfile.read_text().strip()))
        assert result.returncode == 0, f"QEMU refused: {result.stderr.strip()}"
        return pids[-1]

    yield start
    for pid in pids:
        kill_and_wait(pid)


# How long QEMU may take to open its monitor (a loaded 2-core machine included).
START_TIMEOUT = 60.0


@pytest.fixture
def paused_qemu(tmp_path: Path) -> Iterator[Path]:
    socket_path = tmp_path / "qmp.sock"
    process = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S",
         "-qmp", f"unix:{socket_path},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(socket_path, process)
        yield socket_path
    finally:
        process.kill()
        process.wait()


def _wait_listening(path: Path, process: subprocess.Popen[bytes]) -> None:
    """Until QEMU accepts connections on ``path`` (the file exists before QEMU listens)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, f"QEMU exited: {process.stderr and process.stderr.read()!r}"
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
        assert time.monotonic() < deadline, f"QEMU's monitor {path} not up in {START_TIMEOUT:g} s"
        time.sleep(0.02)

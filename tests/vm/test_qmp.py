"""The QMP facade against a real QEMU."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdisk.qemu.qmp import QmpCommandError, QmpConnection, QmpError

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


@pytest.mark.qemu
def test_execute_returns_qemus_answer(paused_qemu: Path) -> None:
    with QmpConnection(paused_qemu) as qmp:
        assert qmp.execute("query-status")["status"] == "prelaunch"


@pytest.mark.qemu
def test_refused_command_carries_qemus_message(paused_qemu: Path) -> None:
    with QmpConnection(paused_qemu) as qmp, pytest.raises(QmpCommandError) as refused:
        qmp.execute("blockdev-del", {"node-name": "nonexistent"})
    assert "nonexistent" in refused.value.desc
    assert str(refused.value).startswith("QEMU refused blockdev-del: ")


def test_missing_socket_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(QmpError, match="cannot connect to QEMU's monitor at .*missing.sock"):
        with QmpConnection(tmp_path / "missing.sock", timeout=2):
            pass


@pytest.mark.qemu
def test_quit_then_close_is_clean(paused_qemu: Path) -> None:
    # QEMU closes the monitor right after "quit": leaving the block must not raise.
    with QmpConnection(paused_qemu) as qmp:
        qmp.execute("quit")

"""The QMP facade against a real QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdisk.qemu.qmp import QmpCommandError, QmpConnection, QmpError


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

"""The QMP facade against a real QEMU."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path
from typing import Any

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


QEMU_7_2 = {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "Debian 1:7.2+dfsg-7+deb12u18"}
JOB_EVENT = {"timestamp": {"seconds": 1, "microseconds": 0}, "event": "JOB_STATUS_CHANGE",
             "data": {"status": "running", "id": "commit-drive-scsi0"}}


def test_events_around_the_greeting_and_negotiation_are_passed_over(tmp_path: Path) -> None:
    """What QEMU 7.2 sent a new client while a killed qdisk's block job ran (seen on a loaded
    machine, replayed here in order): an event before the greeting (the monitor still in
    command mode from the previous client), then an event and a previous client's late
    answer between ``qmp_capabilities`` and its reply."""
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(10)
    received: list[dict[str, Any]] = []

    def monitor() -> None:
        connection, _ = server.accept()
        with connection:
            def send(*messages: object) -> None:
                connection.sendall(b"".join(json.dumps(item).encode() + b"\n" for item in messages))

            def command() -> dict[str, Any]:
                # A client's commands are JSON texts without a line end (QEMU's parser streams).
                text = b""
                while chunk := connection.recv(4096):  # b"": the client gave up
                    text += chunk
                    with contextlib.suppress(ValueError):
                        received.append(json.loads(text))
                        return received[-1]
                raise EOFError("the client hung up")

            send(JOB_EVENT, {"QMP": {"version": QEMU_7_2, "capabilities": ["oob"]}})
            command()
            send(JOB_EVENT, {"return": {}, "id": "__qmp#00003"}, {"return": {}})
            send({"return": {"status": "running"}, "id": command()["id"]})
            connection.recv(4096)  # until the client hangs up

    thread = threading.Thread(target=monitor)
    thread.start()
    try:
        with QmpConnection(path, timeout=10) as qmp:
            assert qmp.execute("query-status") == {"status": "running"}
    finally:
        thread.join(timeout=10)
        server.close()
    assert [message["execute"] for message in received] == ["qmp_capabilities", "query-status"]

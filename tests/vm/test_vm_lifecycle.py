"""Real QEMU under TCG (no guest OS): start with each syntax, status, changes to a running
VM (non-cache keys; qdisk.vm.live's tests cover the cache), stop, a QEMU that dies on its own,
refusals, a QEMU that fails to start."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from qdisk.qemu.qmp import QmpConnection
from qdisk.system.processes import alive as process_alive

from cli_helpers import RunQdisk

pytestmark = pytest.mark.qemu


def _status(run_qdisk: RunQdisk) -> dict[str, object]:
    result = run_qdisk("vm", "status", "100", "--json")
    assert result.exit_code == 0, result.stderr
    status: dict[str, object] = json.loads(result.stdout)
    return status


def _wait_dead(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive after {timeout:g} s"
        time.sleep(0.05)


@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_start_change_stop(syntax: str, vm_home: Path, run_qdisk: RunQdisk,
                           config_file: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64", "--name", "one",
                     "--scsi0", "local:0.01,format=qcow2,qcow2-l2-cache-size=1").exit_code == 0

    started = run_qdisk("vm", "start", "100", "--syntax", syntax)

    assert started.exit_code == 0, started.stderr
    status = _status(run_qdisk)
    assert (status["status"], status["syntax"]) == ("running", syntax)
    assert isinstance(status["pid"], int) and process_alive(status["pid"])
    assert status["qmp"] == str(vm_home / "run" / "100.qmp")
    image = vm_home / "storage/local/images/100/vm-100-disk-0.qcow2"
    assert status["disks"] == {"scsi0": {"nodes": [
        {"node-name": status["disks"]["scsi0"]["nodes"][0]["node-name"],  # type: ignore[index]
         "filename": str(image), "cache": {"l2-cache-size": 1024 * 1024}}]}}
    with QmpConnection(vm_home / "run" / "100.qmp") as qmp:
        assert qmp.execute("query-status")["status"] == "running"
    assert "100 one" in " ".join(run_qdisk("vm", "list").stdout.split())
    refused = run_qdisk("vm", "start", "100")
    assert refused.exit_code == 2 and "already running" in refused.stderr
    assert run_qdisk("vm", "destroy", "100").exit_code == 2

    # While it runs: a fast-plug key applies at once, memory waits for the next start.
    changed = run_qdisk("vm", "set", "100", "--name", "two", "--memory", "128")
    assert changed.exit_code == 0, changed.stderr
    assert "pending until the next start: memory" in changed.stdout
    assert run_qdisk("vm", "pending", "100").stdout.splitlines()[:3] == [
        "cur memory: 64", "new memory: 128", "cur name: two"]

    stopped = run_qdisk("vm", "stop", "100")

    assert stopped.exit_code == 0, stopped.stderr
    _wait_dead(status["pid"])
    assert _status(run_qdisk)["status"] == "stopped"
    assert sorted(path.name for path in (vm_home / "run").iterdir()) == ["100.log"]
    again = run_qdisk("vm", "stop", "100")
    assert again.exit_code == 2 and "VM 100 is not running" in again.stderr
    # The next start applies what was pending.
    assert run_qdisk("vm", "start", "100", "--syntax", syntax).exit_code == 0
    assert "memory: 128\n" in config_file.read_text()
    assert "[PENDING]" not in config_file.read_text()
    assert run_qdisk("vm", "stop", "100", "--timeout", "5").exit_code == 0


def test_status_tells_the_truth_when_qemu_dies(vm_home: Path, run_qdisk: RunQdisk) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    assert run_qdisk("vm", "start", "100").exit_code == 0
    pid = _status(run_qdisk)["pid"]
    assert isinstance(pid, int)

    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)

    status = _status(run_qdisk)
    assert (status["status"], status["pid"]) == ("stopped", None)
    # The socket path stays known (where the VM will listen), though nothing listens now.
    assert status["qmp"] == str(vm_home / "run" / "100.qmp")
    # Its stale run files are gone, and it starts again.
    assert not (vm_home / "run" / "100.pid").exists()
    assert not (vm_home / "run" / "100.state.json").exists()
    assert run_qdisk("vm", "start", "100").exit_code == 0
    assert _status(run_qdisk)["status"] == "running"


def test_a_qemu_that_cannot_start_reports_its_message(vm_home: Path, run_qdisk: RunQdisk,
                                                     config_file: Path) -> None:
    # The volume's image does not exist: QEMU refuses to open it.
    assert run_qdisk("vm", "create", "100", "--memory", "64",
                     "--scsi0", "local:100/vm-100-disk-7.raw").exit_code == 0

    result = run_qdisk("vm", "start", "100")

    assert result.exit_code == 1
    assert "VM 100: QEMU failed to start: " in result.stderr
    assert "vm-100-disk-7.raw" in result.stderr and "No such file or directory" in result.stderr
    assert _status(run_qdisk)["status"] == "stopped"
    assert sorted(path.name for path in (vm_home / "run").iterdir()) == ["100.log"]

"""The whole flow through the CLI on a fresh QDISK_HOME: a VM with a 32 TiB thin qcow2 disk
runs under TCG, its cache changes live, and QEMU's address space shows it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qdisk.settings import Settings
from qdisk.vm.state import running_pid

from cli_helpers import RunQdisk
from live_helpers import GIB, QEMU_ENV
from qemu_helpers import address_space, kill_and_wait

pytestmark = pytest.mark.qemu

VMID = "100"
# Address space QEMU may gain besides the cache (threads, QMP buffers).
NOISE = 64 * 2**20


def json_of(run_qdisk: RunQdisk, *args: str) -> Any:
    result = run_qdisk(*args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def running_vm(home: Path, run_qdisk: RunQdisk,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """VM 100 created and started through the CLI; its QEMU is killed at teardown, also
    when the start or this fixture fails."""
    monkeypatch.setenv("QDISK_ACCEL", "tcg")
    for variable, value in QEMU_ENV.items():
        monkeypatch.setenv(variable, value)
    created = run_qdisk("vm", "create", VMID, "--memory", "32", "--scsihw", "virtio-scsi-pci",
                        "--scsi0", "local:32768,format=qcow2,discard=on")
    assert created.exit_code == 0, created.stderr
    try:
        started = run_qdisk("vm", "start", VMID)
        assert started.exit_code == 0, started.stderr
        pid = json_of(run_qdisk, "vm", "status", VMID, "--json")["pid"]
        assert isinstance(pid, int)
        yield pid
    finally:
        # Whatever the pid file names, if it is this VM's QEMU (not a reused pid).
        leftover = running_pid(Settings.from_env(), int(VMID))
        if leftover is not None:
            kill_and_wait(leftover)


def test_cache_change_through_the_cli_applies_live(running_vm: int, run_qdisk: RunQdisk) -> None:
    scsi0 = json_of(run_qdisk, "vm", "config", VMID, "--json")["scsi0"]
    size_before = address_space(running_vm)

    changed = run_qdisk("vm", "set", VMID, "--scsi0", f"{scsi0},qcow2-l2-cache-size=4096")

    assert changed.exit_code == 0, changed.stderr
    assert 4 * GIB - NOISE < address_space(running_vm) - size_before < 4 * GIB + NOISE
    assert "qcow2-l2-cache-size=4096" in json_of(run_qdisk, "vm", "config", VMID,
                                                 "--current", "--json")["scsi0"]
    pending = json_of(run_qdisk, "vm", "pending", VMID, "--json")
    assert [item for item in pending if "pending" in item or item["delete"]] == []
    status = json_of(run_qdisk, "vm", "status", VMID, "--json")
    assert [node["cache"] for node in status["disks"]["scsi0"]["nodes"]] == \
        [{"l2-cache-size": 4 * GIB}]

    stopped = run_qdisk("vm", "stop", VMID)
    assert stopped.exit_code == 0, stopped.stderr
    assert json_of(run_qdisk, "vm", "status", VMID, "--json")["status"] == "stopped"

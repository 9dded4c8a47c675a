"""`qdisk demo`: the whole flow runs for real and leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qdisk.qemu.command import BLOCKDEV_MIN_VERSION
from qdisk.system.tools import qemu_version

from cli_helpers import RunQdisk


def _qemu_processes_using(path: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if "qemu" in line and str(path) in line]


@pytest.mark.qemu
def test_demo_runs_the_whole_flow_and_cleans_up(run_qdisk: RunQdisk, home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDISK_ACCEL", "tcg")
    result = run_qdisk("demo", "--bench-size", "64M", "--bench-runtime", "1")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for step in ("1. The drive language", "3. The cache plan", "5. Start the VM",
                 "6. Change the cache while it runs", "7. Stop the VM", "8. Measure the gain",
                 "9. Remove the demo VM"):
        assert step in out
    # The auto size reached QEMU, then the live change replaced it. The installed QEMU says
    # how: -blockdev's JSON from QEMU 10 on (as Proxmox VE 9), -drive's text before.
    if qemu_version("qemu-system-x86_64")[:2] >= BLOCKDEV_MIN_VERSION:
        assert '"cache-size":167772160' in out and "blockdev syntax" in out
    else:
        assert "cache-size=167772160" in out and "drive syntax" in out
    assert "qcow2 cache l2-cache-size 64 MiB applied live" in out
    assert "qcow2-auto/qcow2-default:" in out
    assert "VM 9100 stopped" in out
    # Only the deliberately wrong drive line of step 1 complains.
    assert [line for line in result.stderr.splitlines() if line.startswith("qdisk: ")] == [
        "qdisk: scsi0.qcow2-l2-cache-entry-size: must be a power of two",
        "qdisk: scsi0.qcow2-cache-size-based-on-disk: qcow2-cache-size-based-on-disk is not "
        "compatible with qcow2-l2-cache-size being set: with it, the cache size is computed "
        "from the disk's size"]
    assert not _qemu_processes_using(home)
    assert not list((home / "qemu-server").glob("*.conf"))
    assert not list(home.glob("storage/local/images/9100/*"))

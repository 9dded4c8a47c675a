"""A qcow2 on a real block device (a loop device, as a qcow2 LV on LVM would be): its header
read from the device, the auto cache size from it, a host_device node, and a VM that runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdisk.cache import auto_size
from qdisk.image.info import read_image
from qdisk.qemu.qmp import QmpConnection
from qdisk.settings import Tools

from cli_helpers import RunQdisk

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = [pytest.mark.qemu, pytest.mark.losetup]

GIB = 1024**3


def test_the_header_is_read_from_the_device(loop_qcow2: Path) -> None:
    # A block device's st_size is 0: the reader seeks to its end.
    assert loop_qcow2.stat().st_size == 0
    image = read_image(loop_qcow2, format="qcow2", tools=TOOLS)
    assert (image.format, image.virtual_size, image.cluster_size) == ("qcow2", GIB, 65536)


def test_cache_plan_of_the_device(loop_qcow2: Path, run_qdisk: RunQdisk, home: Path) -> None:
    result = run_qdisk("cache", "plan", "--json", str(loop_qcow2))
    assert result.exit_code == 0, result.stderr
    [node] = json.loads(result.stdout)["nodes"]
    assert (node["filename"], node["virtual-size"]) == (str(loop_qcow2), GIB)
    assert node["auto"]["cache-size"] == auto_size(read_image(loop_qcow2, format="qcow2", tools=TOOLS)).cache_size


def test_showcmd_renders_a_host_device_with_the_auto_size(loop_qcow2: Path, vm_home: Path,
                                                          run_qdisk: RunQdisk) -> None:
    expected = auto_size(read_image(loop_qcow2, format="qcow2", tools=TOOLS)).cache_size
    _create_vm(run_qdisk, loop_qcow2)
    shown = run_qdisk("vm", "showcmd", "100", "--syntax", "blockdev")
    assert shown.exit_code == 0, shown.stderr
    [blockdev] = [json.loads(argument.strip("'")) for argument in shown.stdout.split()
                  if argument.startswith("'{\"detect-zeroes")]
    assert blockdev["file"]["cache-size"] == expected
    assert blockdev["file"]["file"]["driver"] == "host_device"
    assert blockdev["file"]["file"]["aio"] == "io_uring"


@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_vm_starts_on_the_device_with_the_auto_size(loop_qcow2: Path, vm_home: Path,
                                                    run_qdisk: RunQdisk, syntax: str) -> None:
    expected = auto_size(read_image(loop_qcow2, format="qcow2", tools=TOOLS)).cache_size
    _create_vm(run_qdisk, loop_qcow2)

    started = run_qdisk("vm", "start", "100", "--syntax", syntax)

    assert started.exit_code == 0, started.stderr
    status = json.loads(run_qdisk("vm", "status", "100", "--json").stdout)
    [applied] = status["disks"]["scsi0"]["nodes"]
    assert (applied["filename"], applied["cache"]) == (str(loop_qcow2), {"cache-size": expected})
    with QmpConnection(vm_home / "run" / "100.qmp") as qmp:
        nodes = {node["node-name"]: node for node in qmp.execute("query-named-block-nodes", {"flat": True})}
    qcow2, file = nodes[applied["node-name"]], nodes["e" + applied["node-name"][1:]]
    assert (qcow2["drv"], qcow2["file"], file["drv"]) == ("qcow2", str(loop_qcow2), "host_device")
    assert run_qdisk("vm", "stop", "100").exit_code == 0


def _create_vm(run_qdisk: RunQdisk, device: Path) -> None:
    created = run_qdisk("vm", "create", "100", "--memory", "64", "--scsi0",
                        f"{device},format=qcow2,qcow2-cache-size-based-on-disk=1")
    assert created.exit_code == 0, created.stderr


def test_the_device_image_checks_the_cache_keys(loop_qcow2: Path, vm_home: Path,
                                               run_qdisk: RunQdisk) -> None:
    refused = run_qdisk("vm", "create", "100", "--scsi0",
                        f"{loop_qcow2},format=qcow2,qcow2-l2-cache-entry-size=131072")
    assert refused.exit_code == 2
    assert "qcow2-l2-cache-entry-size" in refused.stderr and "65536" in refused.stderr, refused.stderr

"""Live changes against the installed QEMU (7.2 or 10.0) under TCG, one paused VM per
syntax, one disk per test (so tests do not depend on each other's order). QEMU reports
cache sizes nowhere; the process's address space (VmSize) shows them: a 32 TiB thin
qcow2 needs 4 GiB of L2."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qdisk.config.drive import Drive, parse_drive
from qdisk.qemu.qmp import QmpCommandError
from qdisk.vm.live import LiveOutcome, LiveResult, apply_drive_change

from live_helpers import GIB, VMID, LiveHome, RunningVm, make_live_home, start_vm

pytestmark = pytest.mark.qemu

MIB = 2**20
# Address space QEMU may gain or lose besides the caches (threads, QMP buffers).
NOISE = 64 * MIB
# QEMU's L2 cache of an image of 256 GiB or more when no option is given.
DEFAULT_L2 = 32 * MIB


@pytest.fixture(scope="module", params=["blockdev", "drive"])
def vm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       started_pids: list[int]) -> Iterator[RunningVm]:
    live_home = make_live_home(tmp_path_factory.mktemp(request.param))
    image = live_home.create_qcow2
    drives = {
        "scsi0": image("vm-100-disk-0.qcow2", "32T") + ",discard=on,mbps=10",
        "scsi1": image("vm-100-disk-1.qcow2", "32T") + ",cache=writeback,mbps=10",
        "scsi3": image("vm-100-disk-3.qcow2", "1T") + ",iops=100",
        "scsi4": image("vm-100-disk-4.raw", "1M"),
    }
    # Chains: disk-2 starts with QEMU's implicit backing node, disk-5 with qdisk's.
    for number, auto in ((2, "0"), (5, "1")):
        image(f"base-{number}.qcow2", "4T")
        drives[f"scsi{number}"] = image(f"vm-100-disk-{number}.qcow2", "4T", "-b",
                                        f"base-{number}.qcow2", "-F", "qcow2") + \
            f",qcow2-cache-size-based-on-disk={auto}"
    yield start_vm(live_home, drives, request.param, started_pids)


def change(vm: RunningVm, key: str, text: str) -> LiveResult:
    """Apply the drive string ``text`` (the volume of ``key`` prepended) to the running VM;
    on success it becomes the drive the VM runs with."""
    old = vm.drives[key]
    new = parse_drive(key, f"{old.file},{text}" if text else old.file).drive
    result = apply_drive_change(vm.settings, VMID, old, new, vm.live_home.storage_config)
    vm.drives[key] = new
    return result


def format_node_name(vm: RunningVm, key: str, depth: int = 0) -> str:
    node = vm.command.graphs[key].format_node
    for _ in range(depth):
        assert node is not None
        node = node["backing"] if "backing" in node else None
    assert node is not None
    return str(node["node-name"])


def applied_cache(vm: RunningVm, key: str) -> list[dict[str, Any]]:
    return [node["cache"] for node in vm.state()["disks"][key]["nodes"]]


def test_cache_change_reaches_qemu_and_keeps_every_other_option(vm: RunningVm) -> None:
    name = format_node_name(vm, "scsi0")
    before, size_before = vm.nodes()[name], vm.vm_size()

    result = change(vm, "scsi0", "discard=on,mbps=10,qcow2-l2-cache-size=4096")

    assert result.outcome is LiveOutcome.LIVE
    grown = vm.vm_size() - size_before
    assert 4 * GIB - NOISE < grown < 4 * GIB + NOISE
    after = vm.nodes()[name]
    assert after["detect_zeroes"] == before["detect_zeroes"] == "unmap"
    assert after["cache"] == before["cache"] and after["cache"]["direct"] is True
    assert after["ro"] is False and after["file"] == before["file"]
    assert applied_cache(vm, "scsi0") == [{"l2-cache-size": 4 * GIB}]

    # Back to QEMU's defaults: the 4 GiB are freed.
    assert change(vm, "scsi0", "discard=on,mbps=10").outcome is LiveOutcome.LIVE
    assert abs(vm.vm_size() - size_before) < NOISE
    assert applied_cache(vm, "scsi0") == [{}]


def test_refused_reopen_changes_nothing_in_qemu(vm: RunningVm) -> None:
    name = format_node_name(vm, "scsi1")
    before, size_before, state_before = vm.nodes()[name], vm.vm_size(), vm.state()
    throttle_before = throttle_of(vm, "scsi1")
    old = vm.drives["scsi1"]
    # 128 KiB entries on 64 KiB clusters: the drive language lets it through (only the
    # image tells), QEMU refuses it at reopen. The throttle change rides along.
    new = parse_drive("scsi1", f"{old.file},cache=writeback,mbps=20,qcow2-l2-cache-size=4096,"
                               "qcow2-l2-cache-entry-size=131072").drive

    with pytest.raises(QmpCommandError, match="L2 cache entry size must be a power of two"):
        apply_drive_change(vm.settings, VMID, old, new, vm.live_home.storage_config)

    assert abs(vm.vm_size() - size_before) < NOISE
    assert vm.nodes()[name] == before
    assert throttle_of(vm, "scsi1") == throttle_before
    assert vm.state() == state_before


def test_chain_toggled_to_auto_size_gets_qdisks_backing_node(vm: RunningVm) -> None:
    top = format_node_name(vm, "scsi2")
    implicit = {name for name in vm.nodes() if name.startswith("#")}
    size_before = vm.vm_size()

    result = change(vm, "scsi2", "qcow2-cache-size-based-on-disk=1")

    assert result.outcome is LiveOutcome.LIVE, result.messages
    nodes = vm.nodes()
    backing = [node for node in nodes.values()
               if node["file"].endswith("base-2.qcow2") and node["drv"] == "qcow2"]
    # One backing node, qdisk's, read-only; QEMU dropped its own.
    assert [node["node-name"].startswith("f") for node in backing] == [True]
    assert backing[0]["ro"] is True
    assert backing[0]["detect_zeroes"] == nodes[top]["detect_zeroes"] == "on"
    assert {name for name in nodes if name.startswith("#")} < implicit
    assert nodes[top]["backing_file"].endswith("base-2.qcow2")
    state_nodes = vm.state()["disks"]["scsi2"]["nodes"]
    assert [node["node-name"] for node in state_nodes] == [top, backing[0]["node-name"]]
    # 4 TiB each: 640 MiB of auto size for the top and for the base, less QEMU's
    # default 32 MiB of L2 each had before.
    auto_sizes = sum(node["cache"]["cache-size"] for node in state_nodes)
    assert auto_sizes == 2 * 640 * MIB
    assert auto_sizes - 2 * DEFAULT_L2 - NOISE < vm.vm_size() - size_before < auto_sizes + NOISE

    # And back: both nodes get QEMU's defaults, the backing node stays qdisk's.
    assert change(vm, "scsi2", "").outcome is LiveOutcome.LIVE
    assert abs(vm.vm_size() - size_before) < NOISE
    assert applied_cache(vm, "scsi2") == [{}, {}]
    assert vm.nodes()[top]["backing_file"].endswith("base-2.qcow2")


def test_auto_to_auto_reopens_only_nodes_whose_options_differ(vm: RunningVm) -> None:
    top, base = format_node_name(vm, "scsi5"), format_node_name(vm, "scsi5", 1)
    cache_before = applied_cache(vm, "scsi5")

    result = change(vm, "scsi5", "qcow2-cache-size-based-on-disk=1,qcow2-cache-clean-interval=30")

    assert result.outcome is LiveOutcome.LIVE
    assert len(result.messages) == 1 and "cache-clean-interval 30 s" in result.messages[0]
    assert applied_cache(vm, "scsi5") == [{**cache_before[0], "cache-clean-interval": 30},
                                          cache_before[1]]

    # To QEMU's defaults and back: qdisk's backing node stays and is reopened each time.
    assert change(vm, "scsi5", "").outcome is LiveOutcome.LIVE
    assert applied_cache(vm, "scsi5") == [{}, {}]
    size_without = vm.vm_size()
    assert change(vm, "scsi5", "qcow2-cache-size-based-on-disk=1").outcome is LiveOutcome.LIVE
    auto_sizes = sum(cache["cache-size"] for cache in applied_cache(vm, "scsi5"))
    grown = vm.vm_size() - size_without
    assert auto_sizes - 2 * DEFAULT_L2 - NOISE < grown < auto_sizes + NOISE
    nodes = vm.nodes()
    assert nodes[base]["ro"] is True and nodes[top]["backing_file"].endswith("base-5.qcow2")


def throttle_of(vm: RunningVm, key: str) -> dict[str, int]:
    """bps and iops limits as QEMU has them: the throttle group (blockdev), the block
    backend (-drive; query-block shows 0 for a throttle node's limits)."""
    with vm.qmp() as qmp:
        if vm.syntax == "blockdev":
            limits = qmp.execute("qom-get", {"path": f"/objects/throttle-drive-{key}",
                                             "property": "limits"})
            return {"bps": limits["bps-total"], "iops": limits["iops-total"]}
        inserted = next(block["inserted"] for block in qmp.execute("query-block")
                        if block["device"] == f"drive-{key}")
        return {"bps": inserted["bps"], "iops": inserted["iops"]}


def test_throttle_limits_change_live_and_removed_ones_reset(vm: RunningVm) -> None:
    assert throttle_of(vm, "scsi3") == {"bps": 0, "iops": 100}

    result = change(vm, "scsi3", "mbps=5")

    assert result.outcome is LiveOutcome.LIVE
    assert throttle_of(vm, "scsi3") == {"bps": 5 * MIB, "iops": 0}
    assert change(vm, "scsi3", "").outcome is LiveOutcome.LIVE
    assert throttle_of(vm, "scsi3") == {"bps": 0, "iops": 0}


def test_qcow2_keys_on_a_raw_disk_are_config_only(vm: RunningVm) -> None:
    result = change(vm, "scsi4", "qcow2-l2-cache-size=64")
    assert result.outcome is LiveOutcome.CONFIG_ONLY
    assert result.messages == ("scsi4.qcow2-l2-cache-size: has no effect: the drive's format is "
                               "raw (the storage's), not qcow2",)


def test_mixed_change_stays_pending_and_qemu_is_untouched(vm: RunningVm) -> None:
    size_before = vm.vm_size()
    old: Drive = vm.drives["scsi0"]
    new = parse_drive("scsi0", f"{old.file},discard=on,mbps=10,aio=threads,"
                               "qcow2-l2-cache-size=4096").drive

    result = apply_drive_change(vm.settings, VMID, old, new, vm.live_home.storage_config)

    assert result.outcome is LiveOutcome.PENDING
    assert result.messages[0] == "scsi0.aio: takes effect at the next start"
    assert abs(vm.vm_size() - size_before) < NOISE


def test_vm_started_elsewhere_keeps_the_change_pending(live_home: LiveHome) -> None:
    volid = live_home.create_qcow2("vm-100-disk-0.qcow2", "1G")
    old = parse_drive("scsi0", volid).drive
    new = parse_drive("scsi0", f"{volid},qcow2-l2-cache-size=8").drive
    result = apply_drive_change(live_home.settings, VMID, old, new, live_home.storage_config)
    assert result.outcome is LiveOutcome.PENDING
    assert "no readable record of how the VM was started" in result.messages[0]

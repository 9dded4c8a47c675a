"""`pve set` and `pve apply` on VMs QEMU runs as qemu-server starts them (the installed
QEMU under TCG, paused): the cache reaches QEMU at once, on qemu-server's own nodes.
QEMU reports cache sizes nowhere; the process's address space (VmSize) shows them."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from qdisk.config.drive import parse_drive
from qdisk.qemu.blockdev import reopen_options
from qdisk.qemu.nodes import format_node, resolve_disk
from qdisk.settings import Tools
from qdisk.storage import parse_storage_cfg

from cli_helpers import RunQdisk
from pve_helpers import GIB, MIB, NOISE, PveTree, vm_size

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

# QEMU's L2 cache of an image of 256 GiB or more when no option is given.
DEFAULT_L2 = 32 * MIB


def nodes(tree: PveTree, vmid: int) -> dict[str, dict[str, Any]]:
    with tree.qmp(vmid) as qmp:
        return {node["node-name"]: node
                for node in qmp.execute("query-named-block-nodes", {"flat": True})}


def assert_grown(pid: int, before: int, expected: int) -> None:
    grown = vm_size(pid) - before
    assert expected - NOISE < grown < expected + NOISE, f"grown by {grown / MIB:.0f} MiB"


def test_set_grows_the_running_vm_by_the_new_cache_and_a_restart_gets_it_from_the_hook(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    before, nodes_before = vm_size(pid), nodes(tree, 100)

    result = run_qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-size=4096")

    assert result.exit_code == 0, result.stderr
    assert "scsi0: " in result.stdout and "qcow2 cache l2-cache-size 4 GiB applied live" in result.stdout
    # 4 GiB of L2 map the 32 TiB thin image whole, instead of QEMU's 32 MiB.
    assert_grown(pid, before, 4 * GIB - DEFAULT_L2)
    assert tree.settings_path(100).read_text().splitlines()[1:] == ["scsi0: qcow2-l2-cache-size=4096"]
    # qemu-server's node names and every other option are as they were.
    assert nodes(tree, 100) == nodes_before
    [top] = tree.record(100)["disks"]["scsi0"]["nodes"]
    assert top["node-name"] in nodes_before and top["cache"] == {"l2-cache-size": 4 * GIB}

    # QEMU killed and started again (as qemu-server would): its defaults, until the hook.
    tree.kill_all()
    pid = tree.start(100)
    before = vm_size(pid)
    hooked = run_qdisk("pve", "hook", "100", "post-start")
    assert hooked.exit_code == 0 and hooked.stderr == ""
    assert_grown(pid, before, 4 * GIB - DEFAULT_L2)
    assert tree.record(100)["pid"] == pid

    # Removed: QEMU's defaults again, at once.
    assert run_qdisk("pve", "set", "100", "--delete", "scsi0").exit_code == 0
    assert_grown(pid, before, 0)
    assert not tree.settings_path(100).exists()


def test_each_image_of_a_linked_clone_and_a_volume_chain_gets_its_own_cache(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    before = vm_size(pid)

    result = run_qdisk("pve", "set", "100", "--scsi1", "qcow2-cache-size-based-on-disk=1",
                       "--scsi2", "qcow2-cache-size-based-on-disk=1")

    assert result.exit_code == 0, result.stderr
    # Clone: 640 MiB for its image and for the template's; volume chain: 288 MiB for the
    # 128 KiB, extended-L2 overlay and 320 MiB for the 64 KiB snapshot below.
    records = tree.record(100)["disks"]
    assert [node["cache"] for node in records["scsi1"]["nodes"]] == [{"cache-size": 640 * MIB}] * 2
    assert [node["cache"] for node in records["scsi2"]["nodes"]] == \
        [{"cache-size": 288 * MIB}, {"cache-size": 320 * MIB}]
    assert_grown(pid, before, (640 + 640 + 288 + 320) * MIB - 4 * DEFAULT_L2)
    # QEMU opened the backing images itself (#block names, which cannot be reopened): each
    # is replaced by a read-only node of qdisk's.
    base = next(node for node in nodes(tree, 100).values()
                if node["file"].endswith("base-900-disk-0.qcow2") and node["drv"] == "qcow2")
    assert base["node-name"] == records["scsi1"]["nodes"][1]["node-name"] and base["ro"] is True

    again = run_qdisk("pve", "apply", "100")
    assert again.exit_code == 0
    assert again.stdout.splitlines() == ["scsi1: QEMU already has these qcow2 cache options",
                                         "scsi2: QEMU already has these qcow2 cache options"]


def test_nodes_a_snapshot_operation_rebuilt_are_reported_and_tuned_again(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    assert run_qdisk("pve", "set", "100", "--scsi1", "qcow2-cache-size-based-on-disk=1").exit_code == 0
    tuned = vm_size(pid)
    [added] = tree.record(100)["disks"]["scsi1"]["added"]
    rebuild_like_qemu_server(tree, "scsi1")
    # The top's cache is QEMU's default again (qdisk's base node is left without a parent).
    assert_grown(pid, tuned, DEFAULT_L2 - 640 * MIB + DEFAULT_L2)

    result = run_qdisk("pve", "apply", "100")

    assert result.exit_code == 0, result.stderr
    assert "scsi1: the nodes qdisk tuned were replaced since" in result.stdout
    assert f"scsi1: node {added} that qdisk had added is no longer used: deleted" in result.stdout
    assert added not in nodes(tree, 100)
    # The top and the new base node at their auto sizes, the unused node's cache freed.
    assert_grown(pid, tuned, DEFAULT_L2)


def rebuild_like_qemu_server(tree: PveTree, key: str) -> None:
    """What a snapshot operation of qemu-server does to a disk's nodes: a new backing node
    under its own name, and the top reopened onto it with the options it generates from
    the config (no cache)."""
    config = tree.config_path(100).read_text()
    text = next(line.split(": ", 1)[1] for line in config.splitlines() if line.startswith(f"{key}:"))
    storage = parse_storage_cfg((tree.pve / "storage.cfg").read_text(), config_dir=tree.pve)
    top = format_node(resolve_disk(parse_drive(key, text).drive, storage), explicit_backing=True, tools=TOOLS)
    backing = {**top["backing"], "node-name": "fsnapshotrebuilt"}
    backing["file"] = {**backing["file"], "node-name": "esnapshotrebuilt"}
    with tree.qmp(100) as qmp:
        qmp.execute("blockdev-add", backing)
        qmp.execute("blockdev-reopen", {"options": [{**reopen_options(top),
                                                     "backing": "fsnapshotrebuilt"}]})


def test_a_value_qemu_refuses_leaves_qemu_and_the_record_as_they_were(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    assert run_qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-size=64").exit_code == 0
    before, nodes_before, record_before = vm_size(pid), nodes(tree, 100), tree.record(100)
    # Edited by hand past `set`'s checks: 128 KiB entries on 64 KiB clusters.
    tree.settings_path(100).write_text("scsi0: qcow2-l2-cache-entry-size=131072\n")

    result = run_qdisk("pve", "apply", "100")

    # QEMU refused the stored value: the request's fault, as `vm set`'s (exit 2).
    assert result.exit_code == 2
    assert "VM 100: QEMU refused, the settings stay stored:\n  scsi0: QEMU refused " \
        "blockdev-reopen: L2 cache entry size must be a power of two" in result.stderr
    assert_grown(pid, before, 0)
    assert nodes(tree, 100) == nodes_before and tree.record(100) == record_before


def test_an_invalid_value_on_a_running_vm_changes_neither_qemu_nor_the_files(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    before = vm_size(pid)
    result = run_qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-entry-size=131072")
    assert result.exit_code == 2 and "nothing changed" in result.stderr
    assert_grown(pid, before, 0)
    assert not tree.settings_path(100).exists()


def test_a_vm_started_with_drive_is_reported_and_left_as_it_is(tree: PveTree,
                                                               run_qdisk: RunQdisk) -> None:
    pid = tree.start(101, "drive")
    before, nodes_before = vm_size(pid), nodes(tree, 101)

    result = run_qdisk("pve", "set", "101", "--scsi0", "qcow2-l2-cache-size=4096")

    assert result.exit_code == 0
    name = next(name for name, node in nodes_before.items() if node["drv"] == "qcow2")
    assert name.startswith("#")
    assert (f"scsi0: QEMU named the disk's node itself ({name}: a VM started with -drive) and "
            "cannot reopen such a node: left as it is") in result.stderr
    assert_grown(pid, before, 0)
    assert nodes(tree, 101) == nodes_before
    # Stored all the same: the VM gets it once it runs with qemu-server's -blockdev nodes.
    assert tree.settings_path(101).exists()


def test_apply_all_and_a_vm_that_does_not_run(tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    tree.start(101, "drive")
    before = vm_size(pid)
    tree.settings_path(100).parent.mkdir()
    tree.settings_path(100).write_text("scsi0: qcow2-l2-cache-size=1024\n")

    result = run_qdisk("pve", "apply", "--all")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("applied live") == 1
    assert_grown(pid, before, 1 * GIB - DEFAULT_L2)
    refused = run_qdisk("pve", "apply", "102")
    assert refused.exit_code == 2 and "VM 102 is locked (backup)" in refused.stderr
    tree.kill_all()
    not_running = run_qdisk("pve", "apply", "100")
    assert not_running.exit_code == 2 and "VM 100 is not running on this node (pve1)" in not_running.stderr


def test_a_busy_qmp_socket_is_waited_for(tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    before = vm_size(pid)
    # Another client (qemu-server's status poller) holds the monitor for a second.
    holder = socket.socket(socket.AF_UNIX)
    holder.connect(str(tree.run_dir / "100.qmp"))
    assert b"QMP" in holder.recv(4096)
    release = threading.Timer(1.0, holder.close)
    release.start()
    try:
        result = run_qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-size=256")
    finally:
        release.join()
    assert result.exit_code == 0, result.stderr
    assert_grown(pid, before, 256 * MIB - DEFAULT_L2)

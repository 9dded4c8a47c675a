"""`qdisk pve audit` on the simulated host: every VM and disk, per image of each chain,
read from the headers; nothing is started."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cli_helpers import RunQdisk
from pve_helpers import GIB, MIB, OTHER_NODE, PveTree, vm_size

pytestmark = pytest.mark.qemu

LAYER_FIELDS = {"filename", "format", "virtual-size", "cluster-size", "extended-l2", "cache",
                "l2-cache-size", "refcount-cache-size", "coverage-percent", "allocated-l2-size",
                "auto-size", "memory",
                "auto-memory"}


def audit_json(run_qdisk: RunQdisk, *args: str) -> dict[str, Any]:
    result = run_qdisk("pve", "audit", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def disks_of(data: dict[str, Any], vmid: int) -> dict[str, dict[str, Any]]:
    vm = next(vm for node in data["nodes"] for vm in node["vms"] if vm["vmid"] == vmid)
    return {disk["key"]: disk for disk in vm["disks"]}


def test_every_disk_of_this_node_with_each_image_of_its_chain(tree: PveTree,
                                                              run_qdisk: RunQdisk) -> None:
    data = audit_json(run_qdisk)

    [node] = data["nodes"]
    assert node["node"] == "pve1" and [vm["vmid"] for vm in node["vms"]] == [100, 101, 102]
    disks = disks_of(data, 100)
    # The CD-ROM drive is no disk.
    assert list(disks) == ["scsi0", "scsi1", "scsi2", "scsi3"]
    for disk in disks.values():
        assert disk["readable"] and all(set(layer) == LAYER_FIELDS for layer in disk["layers"])
    thin = disks["scsi0"]
    assert (thin["storage"], thin["format"], thin["virtual-size"], thin["cluster-size"]) == \
        ("local", "qcow2", 32 * 2**40, 65536)
    # QEMU's default: 32 MiB of L2 map 256 GiB, 1/128 of 32 TiB; the auto size covers it whole.
    [layer] = thin["layers"]
    assert (thin["cache-source"], layer["cache"], layer["l2-cache-size"]) == ("default", {}, 32 * MIB)
    assert layer["coverage-percent"] == pytest.approx(100 / 128, abs=0.01)
    assert layer["auto-size"] == 5 * GIB and layer["auto-memory"] == 5 * GIB
    # The linked clone: its own image and the template's base, 4 TiB each.
    clone = [layer["filename"].rsplit("/", 1)[1] for layer in disks["scsi1"]["layers"]]
    assert clone == ["vm-100-disk-1.qcow2", "base-900-disk-0.qcow2"]
    # The volume chain: a 128 KiB, extended-L2 overlay over a 64 KiB snapshot, each sized
    # from its own header (16-byte L2 entries over twice the cluster: the same L2 need).
    overlay, snapshot = disks["scsi2"]["layers"]
    assert (overlay["cluster-size"], overlay["extended-l2"], snapshot["cluster-size"]) == \
        (131072, True, 65536)
    assert (overlay["auto-size"], snapshot["auto-size"]) == (288 * MIB, 320 * MIB)
    assert disks["scsi3"]["format"] == "raw" and disks["scsi3"]["layers"][0]["memory"] == 0
    vm = node["vms"][0]
    assert vm["running"] is False and vm["memory"] == sum(d["memory"] for d in disks.values())
    assert node["auto-memory"] == sum(vm["auto-memory"] for vm in node["vms"])
    assert node["vms"][2]["lock"] == "backup"


def test_disks_another_node_cannot_read_name_the_reason(tree: PveTree, run_qdisk: RunQdisk) -> None:
    data = audit_json(run_qdisk, "--all-nodes")

    assert [node["node"] for node in data["nodes"]] == ["pve1", OTHER_NODE]
    disks = disks_of(data, 200)
    assert "local storage 'local' of node pve2, not readable from node pve1" in disks["scsi0"]["reason"]
    # Shared storage is the same files on every node.
    assert disks["scsi1"]["readable"] and disks["scsi1"]["virtual-size"] == 2**40
    assert disks["virtio0"]["readable"] is False and "over the network" in disks["virtio0"]["reason"]
    assert audit_json(run_qdisk, "--node", OTHER_NODE)["nodes"][0]["node"] == OTHER_NODE


def test_budget_covers_small_disks_whole_and_shares_the_rest_by_size(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    data = audit_json(run_qdisk, "--budget", "6G")

    plan = {(entry["vmid"], entry["key"]): entry for entry in data["nodes"][0]["budget"]["disks"]}
    # Needs: 160 MiB (102), 608 MiB (volume chain), 1280 MiB (linked clone): all fit whole;
    # the two 32 TiB disks (5 GiB each) share what is left, half each.
    assert {key for key, entry in plan.items() if entry["coverage-percent"] == 100} == \
        {(102, "scsi0"), (100, "scsi2"), (100, "scsi1")}
    assert plan[(100, "scsi1")]["setting"] == "qcow2-cache-size-based-on-disk=1"
    left = 6 * GIB - (160 + 608 + 1280) * MIB
    assert plan[(100, "scsi0")]["setting"] == plan[(101, "scsi0")]["setting"] == \
        f"qcow2-cache-size={left // 2 // MIB}"
    assert sum(entry["memory"] for entry in plan.values()) <= 6 * GIB
    text = run_qdisk("pve", "audit", "--budget", "6G").stdout
    assert "qdisk pve set 100 --scsi1 qcow2-cache-size-based-on-disk=1" in text


def test_audit_reads_headers_only_and_says_what_a_running_vm_has(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    pid = tree.start(100)
    size = vm_size(pid)
    assert run_qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-size=64").exit_code == 0
    tree.settings_path(101).write_text("scsi0: qcow2-cache-size-based-on-disk=1\n")

    data = audit_json(run_qdisk)

    disks = disks_of(data, 100)
    assert (disks["scsi0"]["cache-source"], disks["scsi0"]["layers"][0]["cache"]) == \
        ("applied", {"l2-cache-size": 64 * MIB})
    assert disks["scsi1"]["cache-source"] == "default"
    # A stopped VM: what its next start gives it.
    stopped = disks_of(data, 101)["scsi0"]
    assert (stopped["cache-source"], stopped["layers"][0]["cache"]) == \
        ("settings", {"cache-size": 5 * GIB})
    assert abs(vm_size(pid) - size - 32 * MIB) < 64 * MIB  # 64 MiB of L2 instead of 32


@pytest.mark.parametrize("args, message", [
    (("--node", "pve9"), "node 'pve9' does not exist (nodes: pve1, pve2)"),
    (("--node", "pve1", "--all-nodes"), "--node and --all-nodes exclude each other"),
    (("--budget", "lots"), "'lots' is not a size"),
])
def test_bad_arguments_are_refused(tree: PveTree, run_qdisk: RunQdisk, args: tuple[str, ...],
                                   message: str) -> None:
    result = run_qdisk("pve", "audit", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_a_root_without_a_cluster_file_system_is_refused(tmp_path: Any, run_qdisk: RunQdisk,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDISK_PVE_ROOT", str(tmp_path))
    for command in (("audit",), ("set", "100", "--scsi0", "qcow2-l2-cache-size=8"),
                    ("apply", "100")):
        result = run_qdisk("pve", *command)
        assert result.exit_code == 2 and "not a Proxmox VE host" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_settings_qemu_would_refuse_are_shown_with_qemus_reason(tree: PveTree,
                                                               run_qdisk: RunQdisk) -> None:
    tree.settings_path(101).parent.mkdir()
    # Past `set`'s checks: 128 KiB entries on the image's 64 KiB clusters.
    tree.settings_path(101).write_text("scsi0: qcow2-l2-cache-entry-size=131072\n")
    [disk] = disks_of(audit_json(run_qdisk), 101).values()
    assert disk["readable"] and disk["cache-source"] == "default"
    assert disk["settings-problem"].endswith("vm-101-disk-0.qcow2: L2 cache entry size must be a "
                                             "power of two between 512 and the cluster size (65536)")
    assert disk["layers"][0]["cache"] == {}

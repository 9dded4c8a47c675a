"""Snapshots without QEMU: names, the config as qemu-server keeps snapshots, the tree of
``qm listsnapshot``, the file names of volume-chain layers, the volumes that take part
and the reasons others cannot, and the per-layer cache plan."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from qdisk import storage
from qdisk.cache import auto_size_for, plan_chain
from qdisk.cli.vm import snapshot_tree
from qdisk.config.vmconfig import parse_vm_config, print_vm_config
from qdisk.image.info import ImageInfo
from qdisk.qemu.rules import node_name
from qdisk.storage import StorageConfig
from qdisk.storage.chains import layer_snapshot, snapshot_file_name
from qdisk.units import MIB
from qdisk.vm import snapshot_config
from qdisk.vm.snapshot_config import SnapshotEntry, check_name
from qdisk.vm.snapshot_volumes import Method, SnapshotRefusedError, layer_files, snapshot_volumes

from snapshot_helpers import VMID

CONFIG = """#my VM
memory: 512
parent: first
scsi0: local:100/vm-100-disk-0.qcow2,size=1G
unused0: local:100/vm-100-disk-9.qcow2

[PENDING]
memory: 1024

[first]
#before the upgrade
memory: 256
scsi0: local:100/vm-100-disk-0.qcow2,size=1G
snaptime: 1700000000
"""


@pytest.mark.parametrize(("name", "problem"), [
    ("ok", None), ("Before-Upgrade_2", None), ("a" * 40, None),
    ("a", "invalid snapshot name 'a'"), ("a" * 41, "invalid snapshot name"),
    ("1st", "invalid snapshot name"), ("with space", "invalid snapshot name"),
    ("snap.1", "invalid snapshot name"), ("current", "'current' is reserved"),
    ("PENDING", "'pending' is reserved")])
def test_snapshot_names(name: str, problem: str | None) -> None:
    found = check_name(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_snapshot_copies_the_current_values_as_qemu_server() -> None:
    config = parse_vm_config(CONFIG, VMID)
    snapshot_config.prepare_snapshot(config, "second", "a\ndescription", 1700000100)
    assert config.current.values["lock"] == "snapshot"
    second = config.snapshots["second"]
    # parent is copied; unusedN, the description and pending values are not.
    assert second.values == {"memory": "512", "parent": "first",
                             "scsi0": "local:100/vm-100-disk-0.qcow2,size=1G",
                             "snapstate": "prepare", "snaptime": "1700000100"}
    assert second.description == "a\ndescription"
    snapshot_config.commit_snapshot(config, "second")
    assert "lock" not in config.current.values and "snapstate" not in second.values
    assert config.current.values["parent"] == "second"
    printed = print_vm_config(config)
    assert printed.endswith("\n[second]\n#a\n#description\nmemory: 512\nparent: first\n"
                            "scsi0: local:100/vm-100-disk-0.qcow2,size=1G\nsnaptime: 1700000100\n")
    assert print_vm_config(parse_vm_config(printed, VMID)) == printed


def test_a_deleted_snapshot_hands_its_parent_on() -> None:
    config = parse_vm_config(CONFIG, VMID)
    snapshot_config.prepare_snapshot(config, "second", None, 1700000100)
    snapshot_config.commit_snapshot(config, "second")
    snapshot_config.prepare_delete(config, "first")
    assert config.snapshots["first"].values["snapstate"] == "delete"
    snapshot_config.commit_delete(config, "first")
    assert set(config.snapshots) == {"second"}
    assert "parent" not in config.snapshots["second"].values
    assert config.current.values["parent"] == "second"
    assert "lock" not in config.current.values


def test_a_rollback_takes_the_snapshots_values() -> None:
    config = parse_vm_config(CONFIG.replace("scsi0: local:100/vm-100-disk-0.qcow2,size=1G\nunused0",
                                            "scsi0: local:100/vm-100-disk-0.qcow2,size=1G\n"
                                            "scsi1: local:100/vm-100-disk-1.qcow2\nunused0"), VMID)
    snapshot_config.prepare_rollback(config)
    left = snapshot_config.commit_rollback(config, "first")
    # The disk added after the snapshot stays, as an unused disk; pending changes go;
    # the description is the VM's own.
    assert left == ["local:100/vm-100-disk-1.qcow2"]
    assert config.current.values == {
        "memory": "256", "scsi0": "local:100/vm-100-disk-0.qcow2,size=1G",
        "unused0": "local:100/vm-100-disk-9.qcow2", "unused1": "local:100/vm-100-disk-1.qcow2",
        "parent": "first"}
    assert config.current.description == "my VM"
    assert not config.pending.values


def test_listsnapshot_tree() -> None:
    """As pve-guest-common's print_snapshot_tree: children under their parent (by time,
    current last), four spaces per level, names padded to 30 columns with the prefix, the
    local time in 23, the first line of the description."""
    entries = [SnapshotEntry("first", None, "before the upgrade\nsecond line", 1700000000),
               SnapshotEntry("branch", "first", "", 1700000500),
               SnapshotEntry("second", "first", "", 1700000100),
               SnapshotEntry("current", "second", "You are here!", running=True)]

    def local(seconds: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

    assert snapshot_tree(entries) == [
        f"`-> first                       {local(1700000000)}     before the upgrade",
        f"    `-> second                  {local(1700000100)}     no-description",
        "        `-> current                                     You are here!",
        f"    `-> branch                  {local(1700000500)}     no-description"]
    assert [entry.as_json() for entry in entries[2:]] == [
        {"name": "second", "description": "", "parent": "first", "snaptime": 1700000100,
         "vmstate": 0},
        {"name": "current", "description": "You are here!", "parent": "second", "running": 1}]


def _storages(root: Path) -> StorageConfig:
    return storage.parse_storage_cfg(
        f"dir: local\n\tpath {root}/local\n\tcontent images,iso\n\n"
        f"dir: chain\n\tpath {root}/chain\n\tcontent images\n\tsnapshot-as-volume-chain 1\n\n"
        f"btrfs: butter\n\tpath {root}/btrfs\n\tcontent images\n\n"
        "lvm: lvm-chain\n\tvgname vg1\n\tcontent images\n\tsnapshot-as-volume-chain 1\n")


def test_the_volumes_of_a_snapshot(tmp_path: Path) -> None:
    values = {"scsi0": "chain:100/vm-100-disk-0.qcow2", "scsi1": "local:100/vm-100-disk-1.qcow2",
              "ide2": "local:iso/x.iso,media=cdrom", "scsi2": "none",
              "unused0": "local:100/vm-100-disk-2.raw"}
    volumes = snapshot_volumes(values, _storages(tmp_path))
    assert [(volume.key, volume.method) for volume in volumes] == [
        ("scsi0", Method.CHAIN), ("scsi1", Method.INTERNAL)]
    assert volumes[0].layer_path("first") == \
        tmp_path / "chain/images/100/snap-first-vm-100-disk-0.qcow2"


def test_volumes_that_cannot_have_snapshots_are_refused_with_the_reason(tmp_path: Path) -> None:
    values = {"scsi0": "local:100/vm-100-disk-0.raw", "scsi1": "/srv/disk.qcow2,format=qcow2",
              "scsi2": "butter:100/vm-100-disk-2.raw", "scsi3": "lvm-chain:vm-100-disk-3.qcow2",
              "scsi4": "local:100/vm-100-disk-4.qcow2"}
    with pytest.raises(SnapshotRefusedError) as refused:
        snapshot_volumes(values, _storages(tmp_path))
    assert str(refused.value).splitlines() == [
        "scsi0: volume 'local:100/vm-100-disk-0.raw' on storage 'local' (type dir): a raw image "
        "cannot have snapshots (only qcow2 can)",
        "scsi1: '/srv/disk.qcow2' is not a storage volume: Proxmox VE has no snapshots of it "
        "(snapshot feature is not available)",
        "scsi2: volume 'butter:100/vm-100-disk-2.raw' on storage 'butter' (type btrfs): its "
        "snapshots are the storage's own, made with btrfs's tools, which qdisk does not run",
        "scsi3: volume 'lvm-chain:vm-100-disk-3.qcow2' on storage 'lvm-chain' (type lvm): its "
        "snapshot layers are logical volumes: that needs the LVM tools, which qdisk does not run"]


def test_layer_names_as_pve_storage(tmp_path: Path) -> None:
    config = _storages(tmp_path)
    directory = tmp_path / "chain/images/100"
    volume = storage.resolve(config, "chain:100/vm-100-disk-0.qcow2")
    assert snapshot_file_name(volume, "a-b") == "snap-a-b-vm-100-disk-0.qcow2"
    assert layer_snapshot(volume, str(directory / "snap-a-b-vm-100-disk-0.qcow2")) == "a-b"
    # Another volume's layer, another directory, the volume itself, a linked clone's base:
    for other in ("snap-a-vm-100-disk-1.qcow2", "../101/snap-a-vm-100-disk-0.qcow2",
                  "vm-100-disk-0.qcow2", "base-100-disk-0.qcow2", "snap--vm-100-disk-0.qcow2"):
        assert layer_snapshot(volume, str(directory / other)) is None
    lvm = storage.resolve(config, "lvm-chain:vm-100-disk-3.qcow2")
    assert snapshot_file_name(lvm, "first") == "snap_vm-100-disk-3_first.qcow2"
    assert layer_snapshot(lvm, "/dev/vg1/snap_vm-100-disk-3_first.qcow2") == "first"
    # qemu-server's node names hash the snapshot between the drive and the volume.
    assert node_name("f", "scsi0", "chain:100/vm-100-disk-0.qcow2", snapshot="first") == \
        "f" + hashlib.sha256(b"drive=scsi0,snap=first,volid=chain:100/vm-100-disk-0.qcow2"
                             ).hexdigest()[:30]


def test_layer_files_go_with_their_volume(tmp_path: Path) -> None:
    for name in ("vm-100-disk-0.qcow2", "snap-a-vm-100-disk-0.qcow2", ".qdisk-overlay-vm-100-disk-0.qcow2",
                 "snap-a-vm-100-disk-1.qcow2", "vm-100-disk-10.qcow2", "snap-a-vm-100-disk-10.qcow2"):
        (tmp_path / name).touch()
    assert [path.name for path in layer_files(tmp_path, ["vm-100-disk-0.qcow2"])] == [
        ".qdisk-overlay-vm-100-disk-0.qcow2", "snap-a-vm-100-disk-0.qcow2"]


def _image(name: str, size: int, cluster: int, *, extended: bool = False) -> ImageInfo:
    return ImageInfo(filename=name, format="qcow2", virtual_size=size, cluster_size=cluster,
                     refcount_bits=16, extended_l2=extended)


def test_the_cache_plan_of_each_layer_and_proxmox_ves_rule() -> None:
    """A 2 TiB overlay (resized after the snapshot) on a 1 TiB, 64 KiB-cluster base:
    Proxmox VE gives both the overlay's size."""
    top = _image("top", 2 << 40, 128 << 10, extended=True)
    base = _image("base", 1 << 40, 64 << 10)
    plans = plan_chain([top, base])
    assert [plan.auto.cache_size for plan in plans] == [
        auto_size_for(2 << 40, 128 << 10, 16, True).cache_size, 160 * MIB]
    assert plans[0].proxmox_cache.l2_cache_size == plans[0].auto_cache.l2_cache_size == 256 * MIB
    assert (plans[1].proxmox_cache.l2_cache_size, plans[1].proxmox_cache.refcount_cache_size) == (
        128 * MIB, 160 * MIB)
    assert any("reserves 128 MiB more than this image's own auto size" in note
               for note in plans[1].advice)

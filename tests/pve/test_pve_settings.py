"""qdisk's settings file on pmxcfs, the cluster lock, and `pve set` on VMs that do not run:
every value checked (against the image too) before anything is written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from qdisk.errors import ConfigFileError
from qdisk.pve.cachesettings import cluster_lock, parse_settings, print_settings
from qdisk.pve.host import PveError

from cli_helpers import RunQdisk
from pve_helpers import PveTree

pytestmark = pytest.mark.qemu


def test_settings_print_canonically_and_read_back() -> None:
    settings = parse_settings("# a comment\n\nvirtio1: qcow2-cache-clean-interval=30,"
                              "qcow2-l2-cache-size=64\nscsi0:qcow2-cache-size-based-on-disk=yes\n",
                              source="100.conf")
    text = print_settings(100, settings)
    assert text.splitlines()[1:] == ["scsi0: qcow2-cache-size-based-on-disk=1",
                                     "virtio1: qcow2-cache-clean-interval=30,qcow2-l2-cache-size=64"]
    assert parse_settings(text, source="100.conf") == settings


def test_every_bad_line_of_a_settings_file_is_named() -> None:
    text = ("scsi0: cache=none\nscsi0: qcow2-l2-cache-size=64\nefidisk0: qcow2-cache-size=8\n"
            "not a line\nscsi1: qcow2-l2-cache-size=99999,qcow2-l2-cache-entry-size=1000\n"
            "scsi2: qcow2-cache-size-based-on-disk=1,qcow2-cache-size=64\nscsi3:\n")
    with pytest.raises(ConfigFileError) as error:
        parse_settings(text, source="100.conf")
    lines = str(error.value).splitlines()
    assert lines[0] == ("100.conf: line 1: scsi0.cache: property is not defined in schema and the "
                        "schema does not allow additional properties")
    assert lines[1] == "100.conf: line 3: efidisk0: not a disk drive key: the qcow2 cache options " \
                       "exist for ide0-3, sata0-5, scsi0-30 and virtio0-15"
    assert lines[2] == "100.conf: line 4: not 'DRIVE: OPTIONS'"
    assert "line 5: scsi1.qcow2-l2-cache-size: value must have a maximum value of 10240" in lines[3]
    assert "line 5: scsi1.qcow2-l2-cache-entry-size: must be a power of two" in lines[4]
    assert "line 6: scsi2.qcow2-cache-size-based-on-disk: qcow2-cache-size-based-on-disk is not " \
           "compatible with qcow2-cache-size" in lines[5]
    assert lines[6].startswith("100.conf: line 7: scsi3: no qcow2 cache option given")


def test_cluster_lock_is_a_directory_held_and_released(tmp_path: Path) -> None:
    lock = tmp_path / "priv" / "lock" / "qdisk-100"
    with cluster_lock(lock):
        assert lock.is_dir()
        # Held: another command waits, then gives up naming the lock.
        with pytest.raises(PveError, match="held by another command"), cluster_lock(lock, timeout=0.2):
            pass
    assert not lock.exists()


def test_a_stale_cluster_lock_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "qdisk-100"
    lock.mkdir()
    old = time.time() - 300
    os.utime(lock, (old, old))
    with cluster_lock(lock, timeout=0.2):
        assert lock.stat().st_mtime > old
    assert not lock.exists()


def test_set_on_a_stopped_vm_stores_the_settings_and_says_when_they_apply(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    result = run_qdisk("pve", "set", "101", "--scsi0", "qcow2-cache-size-based-on-disk=1")

    assert result.exit_code == 0, result.stderr
    assert tree.settings_path(101).read_text().splitlines()[1:] == [
        "scsi0: qcow2-cache-size-based-on-disk=1"]
    assert "VM 101 is not running: the settings apply at its next start" in result.stdout
    assert "VM 101: it has no hookscript" in result.stderr
    # Replaced whole (as qm set replaces a drive string), and deleted.
    run_qdisk("pve", "set", "101", "--scsi0", "qcow2-l2-cache-size=8")
    assert tree.settings_path(101).read_text().splitlines()[1:] == ["scsi0: qcow2-l2-cache-size=8"]
    assert run_qdisk("pve", "set", "101", "--delete", "scsi0").exit_code == 0
    assert not tree.settings_path(101).exists()
    assert not (tree.pve / "priv" / "lock" / "qdisk-101").exists()


@pytest.mark.parametrize("args, problem", [
    # Only the image knows: 128 KiB entries on 64 KiB clusters.
    (("--scsi0", "qcow2-l2-cache-entry-size=131072"),
     "scsi0.qcow2-l2-cache-entry-size: value 131072 must be a power of two between 512 and the "
     "cluster size of"),
    (("--scsi0", "qcow2-cache-size=8,qcow2-l2-cache-size=8"),
     "scsi0.qcow2-l2-cache-size: qcow2-l2-cache-size must be smaller than qcow2-cache-size"),
    (("--scsi5", "qcow2-l2-cache-size=8"), "VM 100 has no drive scsi5"),
    (("--scsi3", "qcow2-l2-cache-size=8"), "scsi3: volume 'local:100/vm-100-disk-3.raw' is raw: "
                                           "the qcow2 cache options apply to qcow2 images only"),
    (("--ide2", "qcow2-l2-cache-size=8"), "ide2: a CD-ROM or an empty drive has no qcow2 cache"),
    (("--scsi0", "cache=none"), "scsi0.cache: property is not defined in schema"),
    (("--scsi0", "qcow2-l2-cache-size=8", "--delete", "scsi0"),
     "scsi0: cannot set and delete the same drive at once"),
])
def test_an_invalid_value_changes_nothing(tree: PveTree, run_qdisk: RunQdisk,
                                          args: tuple[str, ...], problem: str) -> None:
    tree.settings_path(100).parent.mkdir()
    tree.settings_path(100).write_text("scsi1: qcow2-l2-cache-size=16\n")

    result = run_qdisk("pve", "set", "100", *args)

    assert result.exit_code == 2
    assert "VM 100: invalid values, nothing changed" in result.stderr and problem in result.stderr
    assert tree.settings_path(100).read_text() == "scsi1: qcow2-l2-cache-size=16\n"


def test_a_locked_vm_is_refused_with_the_reason(tree: PveTree, run_qdisk: RunQdisk) -> None:
    result = run_qdisk("pve", "set", "102", "--scsi0", "qcow2-l2-cache-size=8")
    assert result.exit_code == 2
    assert "VM 102 is locked (backup)" in result.stderr
    assert not tree.settings_path(102).exists()


def test_a_disk_on_another_nodes_local_storage_cannot_be_checked_from_here(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    refused = run_qdisk("pve", "set", "200", "--scsi0", "qcow2-l2-cache-size=8")
    assert refused.exit_code == 2
    assert "scsi0: its image cannot be checked: on local storage 'local' of node pve2" in refused.stderr

    # Shared storage is readable here; the VM is pve2's.
    stored = run_qdisk("pve", "set", "200", "--scsi1", "qcow2-l2-cache-size=8")
    assert stored.exit_code == 0, stored.stderr
    assert "VM 200 belongs to node pve2: the settings apply there" in stored.stdout


def test_a_vm_that_does_not_exist_is_named(tree: PveTree, run_qdisk: RunQdisk) -> None:
    result = run_qdisk("pve", "set", "555", "--scsi0", "qcow2-l2-cache-size=8")
    assert result.exit_code == 2 and "VM 555 does not exist" in result.stderr


def test_a_held_lock_makes_set_wait_then_give_up(tree: PveTree, run_qdisk: RunQdisk,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("qdisk.pve.cachesettings.LOCK_TIMEOUT", 0.2)
    (tree.pve / "priv" / "lock" / "qdisk-101").mkdir()

    held = run_qdisk("pve", "set", "101", "--scsi0", "qcow2-l2-cache-size=8")

    assert held.exit_code == 1 and "the lock is held by another command" in held.stderr
    assert not tree.settings_path(101).exists()

"""Hostile and damaged input on the host: every problem is named in the user's terms,
nothing is written through a link, one damaged VM does not stop the audit of the others."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_helpers import RunQdisk
from pve_helpers import PveTree

pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("content, problem", [
    (b"scsi0: qcow2-l2-cache-size=64\n\xff\n", "line 2: not UTF-8 text (byte 0xFF)"),
    (b"scsi0: qcow2-l2-cache-size=64\0\n", "line 1: NUL character"),
    (b"scsi0: qcow2-l2-cache-size=" + b"9" * 100_000 + b"\n",
     "scsi0: value may only be 8192 characters long"),
    (b"scsi0: qcow2-l2-cache-size=" + b"9" * 8_000 + b"\n",
     "scsi0.qcow2-l2-cache-size: value must have a maximum value of 10240"),
])
def test_a_damaged_settings_file_is_named_and_the_audit_goes_on(
        tree: PveTree, run_qdisk: RunQdisk, content: bytes, problem: str) -> None:
    tree.settings_path(100).parent.mkdir()
    tree.settings_path(100).write_bytes(content)

    result = run_qdisk("pve", "audit", "--json")

    assert result.exit_code == 0
    vms = {vm["vmid"]: vm for vm in json.loads(result.stdout)["nodes"][0]["vms"]}
    assert problem in vms[100]["problem"] and str(tree.settings_path(100)) in vms[100]["problem"]
    assert vms[101]["disks"][0]["readable"]
    refused = run_qdisk("pve", "set", "100", "--scsi1", "qcow2-l2-cache-size=8")
    assert refused.exit_code == 2 and problem in refused.stderr
    assert tree.settings_path(100).read_bytes() == content


def test_a_broken_drive_line_is_named_per_disk(tree: PveTree, run_qdisk: RunQdisk) -> None:
    config = tree.config_path(101)
    original = config.read_bytes()
    config.write_text("memory: 32\nscsi0: local:101/vm-101-disk-0.qcow2,cache=fast\n"
                      "scsi1: local:101/vm-101-disk-9.qcow2\n")
    try:
        data = json.loads(run_qdisk("pve", "audit", "--json").stdout)
        disks = {disk["key"]: disk for vm in data["nodes"][0]["vms"] if vm["vmid"] == 101
                 for disk in vm["disks"]}
        assert "scsi0.cache: value 'fast' does not have a value in the enumeration" in \
            disks["scsi0"]["reason"]
        assert disks["scsi1"]["reason"].endswith("vm-101-disk-9.qcow2: does not exist")
        result = run_qdisk("pve", "set", "101", "--scsi0", "qcow2-l2-cache-size=8")
        assert result.exit_code == 2 and "scsi0.cache: value 'fast'" in result.stderr
    finally:
        config.write_bytes(original)


def test_a_link_in_place_of_the_settings_file_is_replaced_not_followed(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    target = tree.root / "victim"
    target.write_text("# precious\n")
    tree.settings_path(101).parent.mkdir()
    tree.settings_path(101).symlink_to(target)

    result = run_qdisk("pve", "set", "101", "--scsi0", "qcow2-l2-cache-size=8")

    assert result.exit_code == 0, result.stderr
    assert target.read_text() == "# precious\n"
    assert not tree.settings_path(101).is_symlink()
    assert "scsi0: qcow2-l2-cache-size=8" in tree.settings_path(101).read_text()
    assert [path.name for path in tree.settings_path(101).parent.iterdir()] == ["101.conf"]


def a_file(lock: Path) -> None:
    lock.write_text("")


def an_old_lock_with_a_file_in_it(lock: Path) -> None:
    lock.mkdir()
    (lock / "x").write_text("")
    old = time.time() - 600
    os.utime(lock, (old, old))


@pytest.mark.parametrize("make, problem", [
    (a_file, "not a directory, where the cluster lock is taken"),
    (an_old_lock_with_a_file_in_it, "a lock left behind that cannot be removed"),
])
def test_a_lock_that_is_not_one_is_named(tree: PveTree, run_qdisk: RunQdisk,
                                         make: Callable[[Path], None], problem: str) -> None:
    make(tree.pve / "priv" / "lock" / "qdisk-101")
    result = run_qdisk("pve", "set", "101", "--scsi0", "qcow2-l2-cache-size=8")
    assert result.exit_code in (1, 2) and problem in result.stderr
    assert not tree.settings_path(101).exists()


@pytest.mark.parametrize("args", [("set", "99", "--scsi0", "qcow2-l2-cache-size=8"),
                                  ("apply", "1000000000"), ("apply",), ("apply", "100", "--all")])
def test_bad_vm_ids_and_arguments_are_refused(tree: PveTree, run_qdisk: RunQdisk,
                                              args: tuple[str, ...]) -> None:
    result = run_qdisk("pve", *args)
    assert result.exit_code == 2 and result.stderr.strip()
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_a_damaged_record_is_ignored_and_rewritten(tree: PveTree, run_qdisk: RunQdisk) -> None:
    tree.start(100)
    record = tree.root / "var" / "run" / "qdisk" / "100.state.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"pid": "x", "disks": [')

    result = run_qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-size=64")

    assert result.exit_code == 0, result.stderr
    assert tree.record(100)["disks"]["scsi0"]["nodes"][0]["cache"] == {"l2-cache-size": 64 * 2**20}


def test_a_pid_file_of_another_process_is_not_the_vm(tree: PveTree, run_qdisk: RunQdisk) -> None:
    tree.run_dir.mkdir(parents=True)
    (tree.run_dir / "100.pid").write_text(f"{os.getpid()}\n")
    result = run_qdisk("pve", "apply", "100")
    assert result.exit_code == 2 and "VM 100 is not running on this node" in result.stderr

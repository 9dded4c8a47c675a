"""Snapshots of a stopped VM with the real qemu-img: volume chains (a thin 1 TiB image on a
``snapshot-as-volume-chain`` dir storage) and internal qcow2 snapshots, the guest's data
after each operation, the config's tree against the files, and every command killed at
each of its steps and finished by the next command."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from qdisk.vm import lifecycle, snapshots
from qdisk.vm.errors import VmError, VmRefusedError
from qdisk.vm.snapshot_volumes import SnapshotRefusedError

from cli_helpers import CliResult, RunQdisk
from snapshot_helpers import (
    CHUNK,
    VMID,
    GuestData,
    SnapshotHome,
    ancestry,
    assert_consistent,
    chain_files,
    internal_names,
    kill_self,
    run_killed,
)

pytestmark = pytest.mark.qemu


def take(home: SnapshotHome, name: str) -> None:
    snapshots.snapshot(home.settings, VMID, name)


def delete(home: SnapshotHome, name: str) -> None:
    snapshots.delete_snapshot(home.settings, VMID, name)


def rollback(home: SnapshotHome, name: str) -> None:
    snapshots.rollback(home.settings, VMID, name)


def test_volume_chain_of_a_stopped_vm(snap_home: SnapshotHome) -> None:
    home = snap_home
    home.create_vm(scsi0="chain:1024,format=qcow2,qcow2-cache-size-based-on-disk=1")
    guest = GuestData(home)
    image = home.images() / "vm-100-disk-0.qcow2"
    for number, name in enumerate(("first", "second", "third"), start=1):
        guest.write(number, number * CHUNK)
        take(home, name)
        assert_consistent(home)
    guest.write(4, 4 * CHUNK)
    assert [path.name for path in chain_files(image)] == [
        "vm-100-disk-0.qcow2", "snap-third-vm-100-disk-0.qcow2",
        "snap-second-vm-100-disk-0.qcow2", "snap-first-vm-100-disk-0.qcow2"]

    delete(home, "second")  # the middle one: rebased into its child
    assert_consistent(home)
    assert ancestry(home.config()) == ["third", "first"]
    guest.check()

    rollback(home, "third")  # the newest: a new empty overlay on it
    assert_consistent(home)
    del guest.written[4 * CHUNK]
    guest.check({4 * CHUNK: 0})

    delete(home, "first")  # the oldest: its child committed into it, which takes its name
    assert_consistent(home)
    guest.check({4 * CHUNK: 0})
    assert [path.name for path in chain_files(image)] == [
        "vm-100-disk-0.qcow2", "snap-third-vm-100-disk-0.qcow2"]

    removed = lifecycle.destroy(home.settings, VMID)
    assert {path.name for path in removed} == {"vm-100-disk-0.qcow2", "snap-third-vm-100-disk-0.qcow2"}
    assert not home.images().exists()


def test_a_volume_chain_rolls_back_to_its_newest_snapshot_only(snap_home: SnapshotHome) -> None:
    home = snap_home
    home.create_vm(scsi0="chain:1,format=qcow2")
    take(home, "first")
    take(home, "second")
    with pytest.raises(SnapshotRefusedError, match="can't rollback, 'first' is not most recent "
                                                   "snapshot on 'chain:100/vm-100-disk-0.qcow2'"):
        rollback(home, "first")
    assert_consistent(home)


def test_internal_snapshots_of_a_stopped_vm(snap_home: SnapshotHome) -> None:
    home = snap_home
    home.create_vm(scsi0="local:1024,format=qcow2", scsi1="local:1,format=qcow2")
    guest = GuestData(home)
    for number, name in enumerate(("first", "second", "third"), start=1):
        guest.write(number, CHUNK)
        guest.write(number, (number + 1) * CHUNK)
        take(home, name)
    assert internal_names(home.images("local") / "vm-100-disk-1.qcow2") == ["first", "second", "third"]
    delete(home, "second")
    assert_consistent(home)
    assert home.config().snapshots["third"].values["parent"] == "first"

    rollback(home, "first")  # any snapshot, not only the newest
    assert_consistent(home)
    guest.check({CHUNK: 1, 3 * CHUNK: 0, 4 * CHUNK: 0})
    assert home.config().current.values["parent"] == "first"

    delete(home, "third")
    delete(home, "first")
    assert_consistent(home)
    assert internal_names(home.images("local") / "vm-100-disk-0.qcow2") == []
    assert "parent" not in home.config().current.values


def test_a_command_killed_at_each_step_is_finished_by_the_next(snap_home: SnapshotHome) -> None:
    """Killed after each journal write and each file step (a link, a new image, a qemu-img
    run), with a volume chain and an internal-snapshot disk in one VM."""
    home = snap_home
    home.create_vm(scsi0="chain:1,format=qcow2", scsi1="local:1,format=qcow2")
    guest = GuestData(home)
    operations: list[Callable[[], object]] = [
        lambda: take(home, "taken"), lambda: take(home, "newer"), lambda: rollback(home, "newer"),
        lambda: delete(home, "taken"), lambda: delete(home, "newer")]
    for step in range(1, 100):
        guest.write(step % 200 + 1, step * CHUNK)
        reached = False
        for operation in operations:
            reached |= run_killed(operation, step, kill_self)
            # The next command on the VM finishes what the killed one left.
            snapshots.list_snapshots(home.settings, VMID)
            assert_consistent(home)
        guest.check()
        assert not home.config().snapshots
        if not reached:
            break
    assert step > 5


def test_the_commands(snap_home: SnapshotHome, run_qdisk: RunQdisk,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDISK_HOME", str(snap_home.home))
    snap_home.create_vm(scsi0="chain:1,format=qcow2", scsi1="local:1,format=qcow2")
    vm = str(VMID)
    assert run_qdisk("vm", "snapshot", vm, "first", "--description", "clean install") == CliResult(
        0, "scsi0: snapshot 'first' taken (a layer of the volume chain)\nscsi1: snapshot 'first' "
           "taken (internal qcow2 snapshot)\nVM 100: snapshot 'first' taken\n", "")
    listed = run_qdisk("vm", "listsnapshot", vm, "--json")
    assert [(entry["name"], entry.get("parent"), entry["description"])
            for entry in json.loads(listed.stdout)] == [
        ("first", None, "clean install"), ("current", "first", "You are here!")]
    assert run_qdisk("vm", "listsnapshot", vm).stdout.splitlines()[1] == \
        "    `-> current                                         You are here!"
    refused = run_qdisk("vm", "snapshot", vm, "second", "--vmstate")
    assert (refused.exit_code, refused.stderr) == (
        2, "qdisk: VM 100: snapshots with RAM state (vmstate) are not supported: qdisk does not "
           "save or restore a VM's memory; take the snapshot without it (disks only)\n")
    assert run_qdisk("vm", "delsnapshot", vm, "nope").stderr == \
        "qdisk: VM 100: snapshot 'nope' does not exist\n"
    assert run_qdisk("vm", "snapshot", vm, "first").stderr == \
        "qdisk: VM 100: snapshot name 'first' already used\n"
    assert run_qdisk("vm", "rollback", vm, "first").exit_code == 0
    assert run_qdisk("vm", "delsnapshot", vm, "first").exit_code == 0
    run_qdisk("vm", "set", vm, "--scsi2", "local:1")  # raw
    raw = snap_home.config().current.values["scsi2"].split(",")[0]
    refused = run_qdisk("vm", "snapshot", vm, "second")
    assert (refused.exit_code, refused.stderr) == (
        2, f"qdisk: VM 100: snapshot feature is not available:\n  scsi2: volume '{raw}' on "
           "storage 'local' (type dir): a raw image cannot have snapshots (only qcow2 can)\n")
    assert_consistent(snap_home)


def test_hostile_states_are_refused_before_anything_changes(snap_home: SnapshotHome) -> None:
    home = snap_home
    home.create_vm(scsi0="chain:1,format=qcow2")
    before = home.config_text()
    # A file (or a link) where the new layer would go.
    layer = home.images() / "snap-first-vm-100-disk-0.qcow2"
    layer.symlink_to("/etc/passwd")
    with pytest.raises(SnapshotRefusedError, match="exists already: the layer of snapshot 'first'"):
        take(home, "first")
    layer.unlink()
    # A lock of another tool (a Proxmox VE backup).
    home.config_path().write_text(before + "lock: backup\n")
    with pytest.raises(VmRefusedError, match=r"VM 100 is locked \(backup\)"):
        take(home, "first")
    home.config_path().write_text(before)
    assert sorted(path.name for path in home.images().iterdir()) == ["vm-100-disk-0.qcow2"]
    # A damaged journal stops every command on the VM, naming the file.
    home.settings.layout.snapshot_journal(VMID).write_text("{not json")
    with pytest.raises(VmError, match="the journal of an interrupted snapshot operation .* is "
                                      "damaged"):
        snapshots.list_snapshots(home.settings, VMID)
    assert home.config_text() == before

"""Snapshots of a running VM (the installed QEMU, 7.2 or 10.0, under TCG, paused: block
nodes need no guest): taken, deleted and rolled back as Proxmox VE does, with the
guest's data checked through QEMU after each operation, QEMU's address space following
each layer's cache, and the config's tree, the files and QEMU's nodes agreeing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from qdisk import storage
from qdisk.qemu.nodes import DISCARD_NO_UNREF_SINCE
from qdisk.qemu.qmp import QmpConnection
from qdisk.system.tools import qemu_version
from qdisk.vm import changes, lifecycle, snapshot_live, snapshots, views
from qdisk.vm.errors import VmError
from qdisk.vm.snapshot_volumes import snapshot_volumes

from qemu_helpers import address_space
from snapshot_helpers import (
    CHUNK,
    MIB,
    VMID,
    GuestData,
    SnapshotHome,
    ancestry,
    assert_consistent,
    kill_qemu,
    kill_self,
    run_killed,
    start_storage_daemon,
)

pytestmark = pytest.mark.qemu

# The auto size of a 1 TiB layer: a 128 KiB-cluster extended-L2 overlay (L2 128 MiB +
# refcount 16 MiB) and the 64 KiB-cluster image qdisk allocates (128 MiB + 32 MiB).
OVERLAY_CACHE = 144 * MIB
BASE_CACHE = 160 * MIB
# Address space QEMU may gain or lose besides the caches and its stacks.
NOISE = 32 * MIB


def vm_size(home: SnapshotHome) -> int:
    """QEMU's address space without its stacks: QEMU pools as many coroutine stacks as were
    alive at once, which a block job on a loaded machine drives up by 40 MiB and more (seen
    on 2 busy cores), so they would blur the caches."""
    status = views.status(home.settings, VMID)
    assert status.pid is not None
    return address_space(status.pid)


def applied(home: SnapshotHome) -> list[tuple[str, dict[str, int]]]:
    """The state's record of scsi0's qcow2 nodes: (file name, cache options), top first."""
    state: dict[str, Any] = views.status(home.settings, VMID).as_json()
    return [(node["filename"].rsplit("/", 1)[-1], node["cache"])
            for node in state["disks"]["scsi0"]["nodes"]]


def test_volume_chain_of_a_running_vm_with_the_auto_size(snap_home: SnapshotHome,
                                                         started: list[int]) -> None:
    home = snap_home
    home.create_vm(scsi0="chain:1024,format=qcow2,qcow2-cache-size-based-on-disk=1")
    result = lifecycle.start(home.settings, VMID, syntax="blockdev", accel="tcg")
    started.append(result.pid)
    # discard-no-unref is QEMU 8.1's: left out (and said so) exactly when the QEMU it runs lacks it.
    left_out = [warning for warning in result.warnings if "discard-no-unref left out" in warning]
    assert bool(left_out) == (qemu_version(home.settings.tools.qemu_system)[:2] < DISCARD_NO_UNREF_SINCE)
    guest = GuestData(home)
    layers = ["vm-100-disk-0.qcow2"]
    for number, name in enumerate(("first", "second", "third"), start=1):
        guest.write(number, number * CHUNK)
        before = vm_size(home)
        snapshots.snapshot(home.settings, VMID, name)
        # One more layer, with its own cache: the new overlay's.
        grown = vm_size(home) - before
        assert OVERLAY_CACHE - NOISE < grown < OVERLAY_CACHE + NOISE
        layers.insert(1, f"snap-{name}-vm-100-disk-0.qcow2")
        assert [file for file, _ in applied(home)] == layers
        assert_consistent(home)
        guest.check()
    assert [cache["cache-size"] for _, cache in applied(home)] == [OVERLAY_CACHE] * 3 + [BASE_CACHE]
    # A cache option set on the running VM reaches every layer (qemu-server's explicit
    # values on every layer), each keeping its own auto size.
    changed = changes.set_options(home.settings, VMID, {
        "scsi0": "chain:100/vm-100-disk-0.qcow2,qcow2-cache-size-based-on-disk=1,"
                 "qcow2-cache-clean-interval=30"})
    assert (changed.applied, changed.error()) == (("scsi0",), None)
    assert [cache for _, cache in applied(home)] == [
        {"cache-size": size, "cache-clean-interval": 30}
        for size in [OVERLAY_CACHE] * 3 + [BASE_CACHE]]
    guest.write(4, 4 * CHUNK)

    before = vm_size(home)
    snapshots.delete_snapshot(home.settings, VMID, "second")  # streamed into its child
    assert -OVERLAY_CACHE - NOISE < vm_size(home) - before < -OVERLAY_CACHE + NOISE
    assert ancestry(home.config()) == ["third", "first"]
    assert [file for file, _ in applied(home)] == [
        "vm-100-disk-0.qcow2", "snap-third-vm-100-disk-0.qcow2", "snap-first-vm-100-disk-0.qcow2"]
    assert_consistent(home)
    guest.check()

    # Proxmox VE rolls back a stopped VM only: the VM is stopped, then started again.
    rolled = snapshots.rollback(home.settings, VMID, "third", start=True)
    assert any("stopped for the rollback" in note for note in rolled.notes)
    started.append(views.status(home.settings, VMID).pid or 0)
    assert views.status(home.settings, VMID).running
    del guest.written[4 * CHUNK]
    guest.check({4 * CHUNK: 0})
    assert_consistent(home)
    with QmpConnection(home.settings.layout.run_files(VMID).qmp) as qmp:
        ro = {node["node-name"]: node["ro"] for node in qmp.execute("query-named-block-nodes")}
    # qemu-server's read-only rule: every layer as the drive (read-write).
    assert not any(ro.values())


def test_internal_snapshots_of_a_running_vm(snap_home: SnapshotHome, started: list[int]) -> None:
    home = snap_home
    home.create_vm(scsi0="local:1024,format=qcow2,qcow2-cache-size-based-on-disk=1")
    started.append(lifecycle.start(home.settings, VMID, accel="tcg").pid)  # -drive syntax
    guest = GuestData(home)
    size = vm_size(home)
    for number, name in enumerate(("first", "second", "third"), start=1):
        guest.write(number, CHUNK)
        snapshots.snapshot(home.settings, VMID, name, description=f"{name} one")
        assert_consistent(home)
    guest.write(4, CHUNK)
    # The same node, the same cache: no layer's cache (160 MiB) comes or goes.
    assert abs(vm_size(home) - size) < NOISE
    snapshots.delete_snapshot(home.settings, VMID, "second")
    assert_consistent(home)
    guest.check()

    snapshots.rollback(home.settings, VMID, "first", start=True)  # to any snapshot
    started.append(views.status(home.settings, VMID).pid or 0)
    guest.check({CHUNK: 1})
    assert_consistent(home)
    entries = snapshots.list_snapshots(home.settings, VMID)
    assert [(entry.name, entry.parent, entry.description) for entry in entries] == [
        ("first", None, "first one"), ("third", "first", "third one"),
        ("current", "first", "You are here!")]


def live_cycle(home: SnapshotHome) -> list[Callable[[], object]]:
    """Every way a running volume chain changes, back to one image: three snapshots, the
    middle one deleted (stream), the oldest (commit into it, its child a snapshot), the
    last (commit, its child the VM's own image)."""
    settings = home.settings
    return [lambda: snapshots.snapshot(settings, VMID, "first"),
            lambda: snapshots.snapshot(settings, VMID, "second"),
            lambda: snapshots.snapshot(settings, VMID, "third"),
            lambda: snapshots.delete_snapshot(settings, VMID, "second"),
            lambda: snapshots.delete_snapshot(settings, VMID, "first"),
            lambda: snapshots.delete_snapshot(settings, VMID, "third")]


def test_qdisk_killed_at_each_step_of_a_live_change(snap_home: SnapshotHome,
                                                    started: list[int]) -> None:
    """QEMU goes on; the next command resumes the change where qdisk was killed."""
    home = snap_home
    home.create_vm(scsi0="chain:1,format=qcow2,qcow2-cache-size-based-on-disk=1")
    started.append(lifecycle.start(home.settings, VMID, syntax="blockdev", accel="tcg").pid)
    guest = GuestData(home)
    for step in range(1, 100):
        reached = False
        for operation in live_cycle(home):
            reached |= run_killed(operation, step, kill_self, file_steps=False)
            # The guest goes on writing in whatever state qdisk left, and keeps its data.
            guest.write(step % 200 + 1, step * CHUNK)
            snapshots.list_snapshots(home.settings, VMID)
            assert_consistent(home)
        guest.check()
        if not reached:
            break
    assert step > 4
    assert views.status(home.settings, VMID).running


def test_qemu_killed_at_each_step_of_a_live_change(snap_home: SnapshotHome,
                                                   started: list[int]) -> None:
    """qdisk finishes the change on the files; QEMU is qemu-storage-daemon (QEMU's block
    layer, restarted in milliseconds) under the VM's run files."""
    home = snap_home
    home.create_vm(scsi0="chain:1,format=qcow2,qcow2-cache-size-based-on-disk=1")
    guest = GuestData(home)
    for step in range(1, 100):
        reached = False
        for operation in live_cycle(home):
            start_storage_daemon(home, started)
            # Written where QEMU is killed: what the guest wrote last survives.
            with guest.exported():
                reached |= run_killed(operation, step,
                                      lambda: (guest.write(step % 200 + 1, step * CHUNK),
                                               kill_qemu(home)()), file_steps=False)
            snapshots.list_snapshots(home.settings, VMID)
            assert_consistent(home)
            if views.status(home.settings, VMID).running:
                lifecycle.stop(home.settings, VMID)
        guest.check()
        if not reached:
            break
    assert step > 4


def test_a_block_job_that_makes_no_progress_is_not_waited_for_forever(
        snap_home: SnapshotHome, started: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A real QEMU job held still (QEMU's rate limit of 1 byte/s after its first chunk, and
    waiting to be finalized if it ends anyway) stops the wait after the stall bound."""
    home = snap_home
    home.create_vm(scsi0="chain:1,format=qcow2")
    started.append(lifecycle.start(home.settings, VMID, syntax="blockdev", accel="tcg").pid)
    GuestData(home).write(1, 0)  # data in the layer below, for the stream to copy
    snapshots.snapshot(home.settings, VMID, "first")
    monkeypatch.setattr(snapshot_live, "JOB_STALL_SECONDS", 0.5)
    [volume] = snapshot_volumes(home.config().current.values, storage.load(home.settings))
    with QmpConnection(home.settings.layout.run_files(VMID).qmp) as qmp:
        live = snapshot_live.LiveDisk(qmp, home.settings, volume)
        qmp.execute("block-stream", {"job-id": "stuck", "device": live.name(None), "speed": 1,
                                     "auto-finalize": False, "auto-dismiss": False})
        with pytest.raises(VmError, match=r"block-stream job made no progress for 0.5 s "
                                          r"\(status (running|pending)\)"):
            live.job("block-stream", "stuck", {}, done=lambda: False)
        assert [job["id"] for job in qmp.execute("query-jobs")] == ["stuck"]  # left to QEMU

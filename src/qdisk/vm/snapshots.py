"""``snapshot``, ``delsnapshot``, ``rollback`` and ``listsnapshot``, as ``qm`` does them.

Each operation checks everything it can before it changes anything (the name, the VM's
lock, every volume's way of taking snapshots, the files, a running QEMU's nodes), then
writes its journal and runs it (:mod:`.snapshot_journal`), which marks the config as
qemu-server does, does each volume's part and finishes the config.

- On a running VM a volume attached to QEMU is changed live: internal snapshots over QMP,
  volume chains by QMP with node replacements (:mod:`.snapshot_live`). Other volumes
  (not attached: ``efidisk0``, ``tpmstate0``) and a stopped VM's are changed on the files.
- Rollback needs the VM stopped, as in Proxmox VE: a running VM is stopped first, and
  started again afterwards only when asked (``start``).
- RAM state (``vmstate``) is not supported: refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.config.vmconfig import VmConfig, drive_items
from qdisk.config.vmoptions import read_options
from qdisk.errors import QdiskError
from qdisk.qemu.command import COMMAND_BUSES
from qdisk.qemu.qmp import QmpConnection
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.vm import lifecycle, snapshot_config, store
from qdisk.vm.journal import check_unlocked, vm_lock
from qdisk.vm.snapshot_config import SnapshotEntry
from qdisk.vm.snapshot_journal import DELETE, ROLLBACK, SNAPSHOT, Operation, VolumeTask, run
from qdisk.vm.snapshot_live import LiveDisk, Neighbours
from qdisk.vm.snapshot_volumes import (
    Method,
    SnapshotRefusedError,
    SnapshotVolume,
    chain_of,
    internal_snapshots,
    layer_place,
    newest_layer,
    snapshot_volume,
    snapshot_volumes,
)
from qdisk.vm.state import read_state, running_pid
from qdisk.vm.volumes import drive_file

__all__ = ["SnapshotEntry", "SnapshotResult", "delete_snapshot", "list_snapshots", "rollback",
           "snapshot"]


@dataclass(frozen=True)
class SnapshotResult:
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def snapshot(settings: Settings, vmid: int, name: str, *, description: str | None = None,
             vmstate: bool = False) -> SnapshotResult:
    """Take snapshot ``name`` of VM ``vmid`` (``qm snapshot``), running or stopped."""
    if vmstate:
        raise SnapshotRefusedError(
            f"VM {vmid}: snapshots with RAM state (vmstate) are not supported: qdisk does not "
            "save or restore a VM's memory; take the snapshot without it (disks only)")
    problem = snapshot_config.check_name(name)
    if problem is not None:
        raise SnapshotRefusedError(f"VM {vmid}: {problem}")
    with vm_lock(settings, vmid):
        config = store.load(settings, vmid)
        check_unlocked(config)
        if read_options(config.current.values).template:
            raise SnapshotRefusedError(f"VM {vmid}: you can't take a snapshot if it's a template")
        if name in config.snapshots:
            raise SnapshotRefusedError(f"VM {vmid}: snapshot name '{name}' already used")
        storage_config = storage.load(settings)
        volumes = _volumes(vmid, config.current.values, storage_config)
        pid = running_pid(settings, vmid)
        tasks = []
        for volume in volumes:
            live = pid is not None and _attached(volume.drive.interface)
            _check_can_take(settings, vmid, volume, name, live=live)
            tasks.append(VolumeTask(volume.key, volume.text, live))
        operation = Operation(SNAPSHOT, name, pid, tasks, description, int(time.time()))
        outcome = run(settings, vmid, operation)
    return SnapshotResult(tuple(outcome.notes), tuple(outcome.warnings))


def delete_snapshot(settings: Settings, vmid: int, name: str) -> SnapshotResult:
    """Delete snapshot ``name`` of VM ``vmid`` (``qm delsnapshot``), running or stopped."""
    with vm_lock(settings, vmid):
        config = store.load(settings, vmid)
        check_unlocked(config)
        section = _snapshot(config, name)
        storage_config = storage.load(settings)
        pid = running_pid(settings, vmid)
        tasks = []
        for volume in _volumes(vmid, section.values, storage_config):
            attached = _attached_volume(config, volume.volid, storage_config) if pid else None
            task = VolumeTask(volume.key, volume.text)
            if attached is not None:
                volume, task = attached, VolumeTask(attached.key, attached.text, live=True)
            if not _has_snapshot(settings, volume, name):
                continue
            if volume.method is Method.CHAIN:
                task.neighbours = _neighbours(settings, volume, name)
                # A layer no chain reads any more is just a file to delete.
                task.live = task.live and task.neighbours is not None
                if task.live:
                    _check_live_chain(settings, vmid, volume)
            tasks.append(task)
        outcome = run(settings, vmid, Operation(DELETE, name, pid, tasks))
    return SnapshotResult(tuple(outcome.notes), tuple(outcome.warnings))


def rollback(settings: Settings, vmid: int, name: str, *, start: bool = False) -> SnapshotResult:
    """Roll VM ``vmid`` back to snapshot ``name`` (``qm rollback``): a running VM is stopped
    first, as Proxmox VE does; ``start`` starts it afterwards (with the syntax it ran with)."""
    notes: list[str] = []
    warnings: list[str] = []
    with vm_lock(settings, vmid):
        _check_rollback(settings, vmid, name)
    syntax = None
    if running_pid(settings, vmid) is not None:
        state = read_state(settings, vmid)
        syntax = state.syntax if state is not None else None
        stopped = lifecycle.stop(settings, vmid)
        warnings += stopped.warnings
        notes.append(f"VM {vmid} stopped for the rollback (Proxmox VE rolls back stopped VMs only)")
    with vm_lock(settings, vmid):
        volumes = _check_rollback(settings, vmid, name)
        if running_pid(settings, vmid) is not None:
            raise SnapshotRefusedError(f"VM {vmid} was started again meanwhile: nothing rolled back")
        tasks = [VolumeTask(volume.key, volume.text) for volume in volumes]
        outcome = run(settings, vmid, Operation(ROLLBACK, name, None, tasks))
    notes += outcome.notes
    warnings += outcome.warnings
    if start:
        started = lifecycle.start(settings, vmid, syntax=syntax)
        warnings += started.warnings
        notes += [*started.notes, f"VM {vmid} started (pid {started.pid})"]
    return SnapshotResult(tuple(notes), tuple(warnings))


def list_snapshots(settings: Settings, vmid: int) -> list[SnapshotEntry]:
    """Every snapshot of VM ``vmid`` and ``current`` (``qm listsnapshot``)."""
    with vm_lock(settings, vmid):
        config = store.load(settings, vmid)
        running = running_pid(settings, vmid) is not None
    return snapshot_config.entries(config, running=running)


# --- checks ---------------------------------------------------------------------------------


def _snapshot(config: VmConfig, name: str) -> vmconfig.Section:
    section = config.snapshots.get(name)
    if section is None:
        raise SnapshotRefusedError(f"VM {config.vmid}: snapshot '{name}' does not exist")
    return section


def _volumes(vmid: int, values: dict[str, str], storage_config: StorageConfig) -> list[SnapshotVolume]:
    try:
        return snapshot_volumes(values, storage_config)
    except SnapshotRefusedError as error:
        raise SnapshotRefusedError(f"VM {vmid}: snapshot feature is not available:\n"
                                   + "\n".join(f"  {line}" for line in str(error).splitlines())
                                   ) from None


def _attached_volume(config: VmConfig, volid: str,
                     storage_config: StorageConfig) -> SnapshotVolume | None:
    """The running drive that has ``volid`` attached to QEMU, if any."""
    for key, text in drive_items(config.current.values):
        if drive_file(key, text) == volid:
            volume = snapshot_volume(key, text, storage_config)
            if volume is not None and _attached(volume.drive.interface):
                return volume
    return None


def _attached(interface: str) -> bool:
    """Whether a drive of this bus is attached to a VM qdisk started (efidisk0 and
    tpmstate0 are not: their volumes change as a stopped VM's)."""
    return interface in COMMAND_BUSES


def _check_can_take(settings: Settings, vmid: int, volume: SnapshotVolume, name: str, *,
                    live: bool) -> None:
    if volume.method is Method.INTERNAL:
        if name in internal_snapshots(settings.tools, volume.path):
            raise SnapshotRefusedError(f"VM {vmid}: {volume.key}: '{volume.path}' already holds "
                                       f"an internal snapshot '{name}'")
        return
    layer = volume.layer_path(name)
    if layer.exists() or layer.is_symlink():
        raise SnapshotRefusedError(f"VM {vmid}: {volume.key}: '{layer}' exists already: the "
                                   f"layer of snapshot '{name}' would take its name")
    if live:
        _check_live_chain(settings, vmid, volume)


def _check_live_chain(settings: Settings, vmid: int, volume: SnapshotVolume) -> None:
    """A running chain is changed live only when QEMU has qdisk's node for every layer."""
    try:
        with QmpConnection(settings.layout.run_files(vmid).qmp) as qmp:
            live = LiveDisk(qmp, settings, volume)
            running, wanted = live.chain(), [layer["node-name"] for layer in live.layers()]
    except QdiskError as error:
        raise SnapshotRefusedError(f"VM {vmid}: {volume.key}: the running VM's volume chain "
                                   f"cannot be changed live: {error}") from None
    if running != wanted or any(volume.layer_of(image.filename) is None
                                for image in chain_of(volume, settings.tools)[1:]):
        raise SnapshotRefusedError(
            f"VM {vmid}: {volume.key}: the running QEMU's nodes of '{volume.volid}' are not "
            "qdisk's nodes of its volume chain (started otherwise, or the chain holds images "
            "that are no snapshots of the volume): stop the VM to change its snapshots")


def _has_snapshot(settings: Settings, volume: SnapshotVolume, name: str) -> bool:
    if volume.method is Method.INTERNAL:
        return name in internal_snapshots(settings.tools, volume.path)
    return volume.layer_path(name).exists()


def _neighbours(settings: Settings, volume: SnapshotVolume, name: str) -> Neighbours | None:
    place = layer_place(volume, name, settings.tools)
    if place is None:
        return None
    return Neighbours(place.child, place.parent, place.child_path.name,
                      place.parent_path.name if place.parent_path is not None else None)


def _check_rollback(settings: Settings, vmid: int, name: str) -> list[SnapshotVolume]:
    config = store.load(settings, vmid)
    check_unlocked(config)
    section = _snapshot(config, name)
    if snapshot_config.VMSTATE_KEY in section.values:
        raise SnapshotRefusedError(f"VM {vmid}: snapshot '{name}' holds the VM's RAM state "
                                   "(vmstate): qdisk cannot restore it")
    state = section.values.get(snapshot_config.SNAPSTATE_KEY)
    if state:
        raise SnapshotRefusedError(f"VM {vmid}: unable to rollback to incomplete snapshot "
                                   f"(snapstate = {state})")
    volumes = _volumes(vmid, section.values, storage.load(settings))
    for volume in volumes:
        if volume.method is Method.CHAIN:
            newest = newest_layer(volume, settings.tools)
            if newest != name:
                raise SnapshotRefusedError(
                    f"VM {vmid}: {volume.key}: can't rollback, '{name}' is not most recent "
                    f"snapshot on '{volume.volid}' (a volume chain rolls back to its newest "
                    f"snapshot{f', {newest}' if newest else ''} only)")
        elif name not in internal_snapshots(settings.tools, volume.path):
            raise SnapshotRefusedError(f"VM {vmid}: {volume.key}: '{volume.path}' holds no "
                                       f"snapshot '{name}'")
    return volumes

"""A snapshot operation is a journal, run to its end by the command that wrote it or, if
that command was killed, by the next command on the VM.

The journal (the layout's ``snapshot_journal``, JSON) names the operation (``snapshot``,
``delete``, ``rollback``), the snapshot, the QEMU the live steps talk to, and each
volume's task: its drive, whether it is changed live and the step it reached. Running
it marks the config as qemu-server does (``lock`` in the current values, ``snapstate:
prepare|delete`` in the snapshot), does each volume's part, then finishes the config and
removes the journal. Every part can run again after an interruption:

- a live task resumes at the step it reached (:mod:`.snapshot_live`);
- a live task whose QEMU is gone (killed, or stopped meanwhile) is finished on the files
  (:mod:`.snapshot_volumes`), with the guest's writes in a temporary overlay committed;
- an offline task runs again from the start, each file step skipping what is done.

So the VM's config, its files and a running QEMU's nodes end consistent, whatever
killed what (qdisk, QEMU, or both) at whichever step.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from qdisk import storage
from qdisk.config.vmconfig import VmConfig
from qdisk.errors import QdiskError
from qdisk.qemu.qmp import QmpCommandError, QmpConnection, QmpError
from qdisk.qemu.reopen import applied_chain
from qdisk.settings import Settings
from qdisk.system import fileio
from qdisk.vm import snapshot_config, store
from qdisk.vm.errors import VmError
from qdisk.vm.snapshot_live import (
    LiveDisk,
    Neighbours,
    Step,
    delete_steps,
    internal_snapshot_steps,
    snapshot_steps,
)
from qdisk.vm.snapshot_volumes import (
    Method,
    SnapshotVolume,
    create_layer,
    delete_layer,
    internal_snapshots,
    merge_temporary_overlay,
    qemu_img_snapshot,
    rollback_layer,
    snapshot_volume,
)
from qdisk.vm.state import read_state, running_pid, write_state

log = logging.getLogger(__name__)

SNAPSHOT, DELETE, ROLLBACK = "snapshot", "delete", "rollback"
_DONE = {SNAPSHOT: "taken", DELETE: "deleted", ROLLBACK: "rolled back to"}
_METHODS = {Method.CHAIN: "a layer of the volume chain", Method.INTERNAL: "internal qcow2 snapshot"}


@dataclass
class VolumeTask:
    """One volume's part: its drive (``key: text``; the running drive when ``live``), the
    step a live task reached, and for deleting a chain layer its neighbours then."""

    key: str
    text: str
    live: bool = False
    step: int = 0
    done: bool = False
    neighbours: Neighbours | None = None


@dataclass
class Operation:
    kind: str
    snapshot: str
    pid: int | None = None
    tasks: list[VolumeTask] = field(default_factory=list)
    description: str | None = None
    snaptime: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        tasks = [VolumeTask(**{**task, "neighbours": Neighbours(**task["neighbours"])
                               if task.get("neighbours") else None}) for task in data["tasks"]]
        return cls(**{**data, "tasks": tasks})


@dataclass
class Outcome:
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def write(settings: Settings, vmid: int, operation: Operation) -> None:
    fileio.atomic_write(settings.layout.snapshot_journal(vmid),
                        json.dumps(operation.as_json(), indent=1) + "\n", home=settings.home)


def read(settings: Settings, vmid: int) -> Operation | None:
    path = settings.layout.snapshot_journal(vmid)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Operation.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as error:
        raise VmError(f"VM {vmid}: the journal of an interrupted snapshot operation "
                      f"('{path}') is damaged ({error}): check the VM's snapshots and files, "
                      "then remove it") from None


def recover(settings: Settings, vmid: int) -> None:
    """Finish the snapshot operation a killed command left (the caller holds the VM's lock)."""
    operation = read(settings, vmid)
    if operation is None:
        return
    log.warning("VM %d: finishing the interrupted %s of snapshot '%s'", vmid, operation.kind,
                operation.snapshot)
    run(settings, vmid, operation)


def run(settings: Settings, vmid: int, operation: Operation) -> Outcome:
    """Carry out ``operation`` to its end (the caller holds the VM's lock)."""
    write(settings, vmid, operation)
    config = store.load(settings, vmid)
    _mark(config, operation)
    store.save(settings, config)
    storage_config = storage.load(settings)
    outcome = Outcome()
    for task in operation.tasks:
        if task.done:
            continue
        volume = snapshot_volume(task.key, task.text, storage_config)
        assert volume is not None
        try:
            outcome.notes.append(_run_task(settings, vmid, operation, task, volume))
        except QmpCommandError as error:
            raise VmError(f"VM {vmid}: {task.key}: QEMU refused to go on with the {operation.kind} "
                          f"of snapshot '{operation.snapshot}': {error.desc}; the next command on "
                          "the VM tries again") from error
        except (QdiskError, OSError) as error:
            reason = (f"{error.filename}: {error.strerror}" if isinstance(error, OSError)
                      else str(error))
            raise VmError(f"VM {vmid}: {task.key}: the {operation.kind} of snapshot "
                          f"'{operation.snapshot}' stopped: {reason}; the next command on the VM "
                          "tries again") from error
        task.done = True
        write(settings, vmid, operation)
    config = store.load(settings, vmid)
    outcome.warnings += _finish(config, operation)
    store.save(settings, config)
    settings.layout.snapshot_journal(vmid).unlink()
    return outcome


def _run_task(settings: Settings, vmid: int, operation: Operation, task: VolumeTask,
              volume: SnapshotVolume) -> str:
    done = (f"{task.key}: snapshot '{operation.snapshot}' {_DONE[operation.kind]} "
            f"({_METHODS[volume.method]}")
    if task.live and operation.pid is not None and running_pid(settings, vmid) == operation.pid:
        try:
            _run_live(settings, vmid, operation, task, volume)
            return f"{done}, on the running VM)"
        except QmpCommandError:
            raise
        except QmpError:
            if running_pid(settings, vmid) is not None:
                raise
            # QEMU is gone: the files are finished as for a stopped VM.
    _run_offline(settings, operation, volume)
    return f"{done})"


def _run_live(settings: Settings, vmid: int, operation: Operation, task: VolumeTask,
              volume: SnapshotVolume) -> None:
    with QmpConnection(settings.layout.run_files(vmid).qmp) as qmp:
        live = LiveDisk(qmp, settings, volume)
        steps = _live_steps(live, operation, task)
        for index in range(task.step, len(steps)):
            task.step = index
            write(settings, vmid, operation)
            name, step = steps[index]
            log.info("VM %d: %s: %s", vmid, task.key, name)
            step()
        task.step = len(steps)
        if volume.method is Method.CHAIN:
            _record_chain(settings, vmid, live)


def _live_steps(live: LiveDisk, operation: Operation, task: VolumeTask) -> list[Step]:
    if live.volume.method is Method.INTERNAL:
        return internal_snapshot_steps(live, operation.snapshot, delete=operation.kind == DELETE)
    if operation.kind == SNAPSHOT:
        return snapshot_steps(live, operation.snapshot)
    assert operation.kind == DELETE and task.neighbours is not None
    return delete_steps(live, operation.snapshot, task.neighbours)


def _record_chain(settings: Settings, vmid: int, live: LiveDisk) -> None:
    """The state's record of the disk's qcow2 nodes, as the chain now is."""
    state = read_state(settings, vmid)
    if state is not None:
        state.disks[live.key] = applied_chain(live.tree())
        write_state(settings, vmid, state)


def _run_offline(settings: Settings, operation: Operation, volume: SnapshotVolume) -> None:
    tools, name = settings.tools, operation.snapshot
    if volume.method is Method.CHAIN:
        if operation.kind == SNAPSHOT:
            create_layer(tools, volume, name)
        elif operation.kind == DELETE:
            delete_layer(tools, volume, name)
        else:
            rollback_layer(tools, volume, name)
        merge_temporary_overlay(tools, volume)
        return
    present = name in internal_snapshots(tools, volume.path)
    if operation.kind == SNAPSHOT and not present:
        qemu_img_snapshot(tools, "-c", name, volume.path)
    elif operation.kind == DELETE and present:
        qemu_img_snapshot(tools, "-d", name, volume.path)
    elif operation.kind == ROLLBACK:
        qemu_img_snapshot(tools, "-a", name, volume.path)


# --- the config --------------------------------------------------------------------------


def _mark(config: VmConfig, operation: Operation) -> None:
    """The config as qemu-server marks it while the operation runs (again: idempotent)."""
    name = operation.snapshot
    if operation.kind == SNAPSHOT:
        if name not in config.snapshots:
            snapshot_config.prepare_snapshot(config, name, operation.description,
                                             operation.snaptime)
    elif operation.kind == DELETE:
        if name in config.snapshots:
            snapshot_config.prepare_delete(config, name)
    else:
        snapshot_config.prepare_rollback(config)


def _finish(config: VmConfig, operation: Operation) -> list[str]:
    name = operation.snapshot
    if operation.kind == SNAPSHOT:
        snapshot_config.commit_snapshot(config, name)
        return []
    if operation.kind == DELETE:
        snapshot_config.commit_delete(config, name)
        return []
    return [f"{volid}: not used by snapshot '{name}': kept as an unused disk"
            for volid in snapshot_config.commit_rollback(config, name)]

"""The qcow2 cache settings applied to a VM running on this node, live.

Which graph the VM has is read from the VM itself over QMP: ``query-block`` names the
node under the guest's device, the block graph the rest. A VM with machine >= 10.0 runs
qemu-server's ``-blockdev`` graph (a throttle node ``drive-scsi0`` over the format node);
a VM started with ``-drive`` (older machines) has nodes QEMU named itself, which QEMU
cannot reopen: such a disk is reported and left as it is. The reopen is the one of
``vm set`` (:func:`qdisk.qemu.reopen.plan_reopen`): the format node (and each backing node
whose cache changes) gets the complete options qdisk's qemu-server-identical graph
builds from the VM's config, plus the cache; a node that runs with other options, or
that a block job uses, is left as it is.

qemu-server connects to the VM's QMP socket per command and expects it free: a VM gets
one short session for all its drives (everything that needs no QEMU is prepared
before), and a busy socket is retried briefly.

What was applied is recorded on this node, ``var/run/qdisk/<vmid>.state.json`` (the
QEMU process, and per disk the chain's node names and each qcow2 node's cache). QEMU
reports neither cache sizes nor node identities, so a chain that is no longer the one
recorded (Proxmox VE's snapshot operations on volume chains rebuild nodes from the
config, without any cache) means the nodes were replaced: that is reported, and the
settings are applied again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdisk import cache
from qdisk.config.drive import Drive
from qdisk.config.propstring import Value
from qdisk.errors import DriveError, InvalidInputError
from qdisk.outcome import ChangeError, DriveOutcome, Outcome, change_error
from qdisk.pve.cachesettings import CacheSettings, check_unlocked, read_settings, with_settings
from qdisk.pve.host import (
    HostVm,
    PveError,
    PveHost,
    PveRefusedError,
    in_drive_order,
    process_start_time,
)
from qdisk.qemu.nodes import Disk, format_node, resolve_disk
from qdisk.qemu.qmp import QmpBusyError, QmpCommandError, QmpConnection, QmpError
from qdisk.qemu.reopen import (
    AppliedNode,
    NotLive,
    RunningLevel,
    backing_chain,
    plan_reopen,
    reopen,
    running_chain,
    running_qemu_version,
)
from qdisk.storage import StorageConfig
from qdisk.system import fileio

# A session waits this long for QEMU's greeting (qemu-server may hold the socket), and a
# refused connection is retried until the deadline.
QMP_TIMEOUT = 5.0
QMP_BUSY_WAIT = 10.0
_RETRY_INTERVAL = 0.2
# --- the record of what was applied -------------------------------------------------------


@dataclass
class DiskRecord:
    """A disk as qdisk left it: the chain's (node name, filename) top down, the cache of
    each qcow2 node, and the nodes qdisk added to the chain (in place of QEMU's own)."""

    chain: list[tuple[str, str]]
    nodes: list[AppliedNode]
    added: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"chain": [{"node-name": name, "filename": filename} for name, filename in self.chain],
                "nodes": [node.as_json() for node in self.nodes], "added": self.added}


@dataclass
class Record:
    """What qdisk applied to one QEMU process (a pid and its start time)."""

    pid: int
    start_time: int | None
    disks: dict[str, DiskRecord] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start-time": self.start_time,
                "disks": {key: disk.as_json() for key, disk in self.disks.items()}}

    @classmethod
    def from_json(cls, data: Any) -> Record | None:
        try:
            disks = {key: DiskRecord(
                [(level["node-name"], level["filename"]) for level in disk["chain"]],
                [AppliedNode.from_json(node) for node in disk["nodes"]],
                [str(name) for name in disk["added"]])
                for key, disk in data["disks"].items()}
            return cls(int(data["pid"]), data["start-time"], disks)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def read_record(host: PveHost, vmid: int, pid: int) -> Record:
    """The record of VM ``vmid``'s QEMU ``pid``; an empty one when there is none, or it
    is of an earlier QEMU of the VM (whose nodes are gone)."""
    start_time = process_start_time(pid)
    try:
        data = json.loads(host.layout.run_files(vmid).state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    record = Record.from_json(data)
    if record is None or (record.pid, record.start_time) != (pid, start_time):
        return Record(pid, start_time)
    return record


def _write_record(host: PveHost, vmid: int, record: Record) -> None:
    fileio.atomic_write(host.layout.run_files(vmid).state,
                        json.dumps(record.as_json(), indent=2) + "\n",
                        home=host.paths.qdisk_run_dir)


# --- QMP ----------------------------------------------------------------------------------


class NotNow(PveError):
    """The running VM cannot take settings at this moment (an incoming migration, a block
    job): nothing was changed, a later try may succeed."""


@contextlib.contextmanager
def qmp_session(socket: Path, *, busy_wait: float | None = None) -> Iterator[QmpConnection]:
    """One short session on a VM's QMP socket; a refused or unanswered connection (the
    socket is busy) is retried for ``busy_wait`` seconds (default QMP_BUSY_WAIT). When
    every try failed and one found the monitor busy, that is the error: later tries may
    fail otherwise (the socket's backlog is full)."""
    deadline = time.monotonic() + (QMP_BUSY_WAIT if busy_wait is None else busy_wait)
    busy: QmpBusyError | None = None
    with contextlib.ExitStack() as stack:
        while True:
            try:
                qmp = stack.enter_context(QmpConnection(socket, timeout=QMP_TIMEOUT))
                break
            except QmpError as error:
                busy = error if isinstance(error, QmpBusyError) else busy
                if time.monotonic() >= deadline:
                    raise busy or error
                time.sleep(_RETRY_INTERVAL)
        yield qmp


def _device_node(blocks: list[dict[str, Any]], key: str) -> str:
    """The node under the guest's device ``key`` (of ``query-block``'s ``blocks``):
    qemu-server's throttle node (-blockdev), or the format node QEMU opened for a ``-drive``."""
    for block in blocks:
        qdev = block.get("qdev", "")
        if qdev == key or qdev.startswith(f"/machine/peripheral/{key}/") \
                or block.get("device") == f"drive-{key}":
            if "inserted" not in block:
                raise NotLive(f"{key}: the running VM's drive has no medium")
            return str(block["inserted"]["node-name"])
    raise NotLive(f"{key}: the running VM has no such disk (the config's drive is not "
                       "the one it runs: a change still pending?)")


# --- applying -----------------------------------------------------------------------------


def apply_settings(host: PveHost, vm: HostVm, settings: CacheSettings,
                   keys: Iterable[str] | None = None, *, storage: StorageConfig | None = None,
                   session_check: Callable[[QmpConnection], None] | None = None,
                   busy_wait: float = QMP_BUSY_WAIT) -> list[DriveOutcome]:
    """Give VM ``vm`` (running on this node) the cache of ``settings``: of ``keys``, by
    default of every drive with settings or with a cache qdisk applied before (a drive
    without settings gets QEMU's defaults). One QMP session for all drives;
    ``session_check`` runs first in it and may raise :class:`NotNow` (then nothing
    changed)."""
    pid = host.running_pid(vm.vmid)
    if pid is None:
        raise PveRefusedError(f"VM {vm.vmid} is not running on this node ({host.node})")
    storage = storage if storage is not None else host.storage_config()
    with fileio.locked(host.paths.apply_lock(vm.vmid), home=host.paths.qdisk_run_dir):
        record = read_record(host, vm.vmid, pid)
        wanted = in_drive_order(set(settings) | set(record.disks) if keys is None else set(keys))
        prepared = [_prepare_drive(vm, key, settings.get(key, {}), storage) for key in wanted]
        disks = [disk for disk in prepared if isinstance(disk, tuple)]
        outcomes = {outcome.key: outcome for outcome in prepared
                    if isinstance(outcome, DriveOutcome)}
        if disks:
            try:
                with qmp_session(host.layout.run_files(vm.vmid).qmp, busy_wait=busy_wait) as qmp:
                    if session_check is not None:
                        session_check(qmp)
                    # Asked once per session: the monitor is held as briefly as can be.
                    running = _RunningVm(running_qemu_version(qmp), qmp.execute("query-block"))
                    for drive, disk in disks:
                        outcomes[drive.key] = _apply_drive(host, qmp, running, drive, disk,
                                                           record)
            except QmpError as error:
                # No session (or QEMU died before the first drive): none of them was touched.
                outcomes.update({drive.key: DriveOutcome(drive.key, Outcome.FAILED,
                                                         (f"{drive.key}: {error}",), str(error))
                                 for drive, _disk in disks if drive.key not in outcomes})
            _write_record(host, vm.vmid, record)
    return [outcomes[key] for key in wanted]


def _prepare_drive(vm: HostVm, key: str, values: Mapping[str, Value],
                   storage: StorageConfig) -> tuple[Drive, Disk] | DriveOutcome:
    """The drive with its settings and its disk, or the outcome of a drive that needs no
    QEMU to be told (not qcow2, settings the drive language refuses, no such drive)."""
    try:
        drive = with_settings(vm.drive(key), values)
        disk = resolve_disk(drive, storage)
    except DriveError as error:
        return DriveOutcome(key, Outcome.LEFT, tuple(f"{line}: left as it is" for line in error.lines()))
    except InvalidInputError as error:
        return _left(key, error)
    if disk.format != "qcow2":
        return DriveOutcome(key, Outcome.SKIPPED, (
            f"{key}: the disk's format is {disk.format or 'none'}: it has no qcow2 cache",))
    return drive, disk


def _left(key: str, error: Exception) -> DriveOutcome:
    text = str(error)
    return DriveOutcome(key, Outcome.LEFT, (
        f"{text if text.startswith(f'{key}:') else f'{key}: {text}'}: left as it is",))


@dataclass(frozen=True)
class _RunningVm:
    """What a session asks QEMU once for all drives: its version (which node options it
    takes: qemu-server could not have given it more) and its block devices."""

    qemu_version: tuple[int, int, int]
    blocks: list[dict[str, Any]]


def _apply_drive(host: PveHost, qmp: QmpConnection, vm: _RunningVm, drive: Drive, disk: Disk,
                 record: Record) -> DriveOutcome:
    key = drive.key
    try:
        wanted = format_node(disk, tools=host.tools, explicit_backing=True,
                             qemu_version=vm.qemu_version)
        running = running_chain(qmp, key, _device_node(vm.blocks, key))
        previous = record.disks.get(key)
        messages, applied = _applied_before(key, running, previous)
        plan = plan_reopen(key, wanted, running, applied,
                           replace_qemu_levels=cache.uses_auto_size(drive))
        reopen(qmp, plan)
        added = [*(previous.added if previous else []),
                 *(node["node-name"] for node in backing_chain(plan.added))]
        messages += _delete_unused(qmp, key, [name for name in added if name not in plan.chain])
    except QmpCommandError as error:
        return DriveOutcome(key, Outcome.REFUSED, (f"{key}: {error}",), str(error))
    except QmpError as error:
        return DriveOutcome(key, Outcome.FAILED, (f"{key}: {error}",), str(error))
    except DriveError as error:
        return DriveOutcome(key, Outcome.LEFT, tuple(f"{line}: left as it is" for line in error.lines()))
    except (NotLive, InvalidInputError) as error:
        # No such drive, an image that cannot be read, nodes that cannot be reopened.
        return _left(key, error)
    record.disks[key] = DiskRecord(
        [(name, level.filename) for name, level in zip(plan.chain, running)], plan.applied_nodes,
        [name for name in added if name in plan.chain])
    changed = bool(messages or plan.options or plan.added is not None)
    return DriveOutcome(key, Outcome.APPLIED if changed else Outcome.UNCHANGED,
                        (*messages, *plan.messages))


def _applied_before(key: str, running: list[RunningLevel],
                    previous: DiskRecord | None) -> tuple[list[str], list[AppliedNode]]:
    """What the running nodes have, as far as qdisk knows: what it recorded, if the chain
    is still the one it left; else QEMU's defaults (a stock qemu-server gives no cache
    options), and a message when nodes it tuned were replaced."""
    defaults = [AppliedNode(level.node_name, level.filename)
                for level in running if level.driver == "qcow2"]
    if previous is None:
        return [], defaults
    if previous.chain != [(level.node_name, level.filename) for level in running]:
        return [f"{key}: the nodes qdisk tuned were replaced since (the backing chain "
                f"changed: Proxmox VE's snapshot operations and block jobs rebuild nodes "
                f"without the cache): applying the settings again"], defaults
    return [], previous.nodes


def _delete_unused(qmp: QmpConnection, key: str, names: list[str]) -> list[str]:
    """Delete nodes qdisk added that the chain no longer uses (qemu-server rebuilt it and
    knows nothing of them): their caches would hold memory until QEMU exits. A node
    still in use somewhere is refused by QEMU and kept."""
    deleted = []
    for name in names:
        with contextlib.suppress(QmpCommandError):
            qmp.execute("blockdev-del", {"node-name": name})
            deleted.append(f"{key}: node {name} that qdisk had added is no longer used: deleted")
    return deleted


def apply_stored(host: PveHost, vmid: int, *,
                 allowed_lock: str | None = None) -> list[DriveOutcome]:
    """Apply VM ``vmid``'s stored settings (``qdisk pve apply``, the hookscript).
    ``allowed_lock``: a config lock that does not stand in the way (``migrate`` on the
    target of a migration, once the VM runs there)."""
    vm = host.find_vm(vmid)
    if vm.lock != allowed_lock:
        check_unlocked(vmid, vm.lock)
    return apply_settings(host, vm, read_settings(host.paths.cache_settings(vmid), vmid))


def apply_error(subject: str, outcomes: Iterable[DriveOutcome]) -> ChangeError | None:
    """The error for the stored settings a running VM (``subject``) did not take (see
    :func:`qdisk.outcome.change_error`)."""
    return change_error(subject, outcomes, consequence="the settings stay stored")


def running_vmids(host: PveHost) -> list[int]:
    """The VMs running on this node (qemu-server's pid files, each checked)."""
    run_dir = host.layout.run_dir
    try:
        names = [path.stem for path in run_dir.glob("*.pid")]
    except OSError:
        return []
    return sorted(vmid for vmid in (int(name) for name in names if name.isdigit())
                  if host.running_pid(vmid) is not None)

"""Snapshots in a VM config, as pve-guest-common's AbstractConfig keeps them.

A snapshot is a section ``[name]``: a copy of the current values (not the description,
``unusedN``, ``lock`` or the snapshot keys), plus ``snaptime``, its own description and
``parent`` (the snapshot the current state derived from when it was taken). The current
values' ``parent`` names the snapshot they derive from. While an operation runs, the
current values hold ``lock`` and the snapshot ``snapstate: prepare`` (being taken) or
``snapstate: delete`` (being deleted). These functions change a parsed config; saving it
is the caller's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qdisk import storage
from qdisk.config.vmconfig import Section, VmConfig
from qdisk.storage.chains import SNAPSHOT_NAME_PATTERN
from qdisk.vm.volumes import drive_files

LOCK_KEY = "lock"
PARENT_KEY = "parent"
SNAPSTATE_KEY = "snapstate"
SNAPTIME_KEY = "snaptime"
VMSTATE_KEY = "vmstate"
# What __snapshot_copy_config leaves out of a copy.
_NOT_COPIED = frozenset({"snapstate", "snaptime", "vmstate", "lock", "digest", "runningmachine",
                         "runningcpu"})
# pve-configid, at most 40 characters; 'current' and 'pending' are reserved.
_NAME_RE = re.compile(SNAPSHOT_NAME_PATTERN, re.ASCII)
MAX_NAME_LENGTH = 40
RESERVED_NAMES = ("current", "pending")
CURRENT_DESCRIPTION = "You are here!"


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a snapshot, or None."""
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        return (f"invalid snapshot name '{name}': a letter, then letters, digits, '-' or '_' "
                f"(2 to {MAX_NAME_LENGTH} characters)")
    if name.lower() in RESERVED_NAMES:
        return f"invalid snapshot name '{name}': '{name.lower()}' is reserved"
    return None


def copy_values(values: dict[str, str]) -> dict[str, str]:
    """__snapshot_copy_config: the values a snapshot keeps of a config."""
    return {key: value for key, value in values.items()
            if key not in _NOT_COPIED and not re.fullmatch(r"unused\d+", key)}


def prepare_snapshot(config: VmConfig, name: str, description: str | None, snaptime: int) -> None:
    """The new snapshot's section with ``snapstate: prepare``, and the VM locked."""
    snapshot = Section(copy_values(config.current.values), description)
    snapshot.values[SNAPSTATE_KEY] = "prepare"
    snapshot.values[SNAPTIME_KEY] = str(snaptime)
    config.snapshots[name] = snapshot
    config.current.values[LOCK_KEY] = "snapshot"


def commit_snapshot(config: VmConfig, name: str) -> None:
    """The snapshot is taken: its state cleared, the VM unlocked, the current values derive
    from it."""
    config.snapshots[name].values.pop(SNAPSTATE_KEY, None)
    config.current.values.pop(LOCK_KEY, None)
    config.current.values[PARENT_KEY] = name


def prepare_delete(config: VmConfig, name: str) -> None:
    config.snapshots[name].values[SNAPSTATE_KEY] = "delete"
    config.current.values[LOCK_KEY] = "snapshot-delete"


def commit_delete(config: VmConfig, name: str) -> None:
    """The snapshot's section goes; what named it as parent now names its parent."""
    snapshot = config.snapshots.pop(name, None)
    parent = snapshot.values.get(PARENT_KEY) if snapshot is not None else None
    for section in (config.current, *config.snapshots.values()):
        if section.values.get(PARENT_KEY) == name:
            if parent is None:
                del section.values[PARENT_KEY]
            else:
                section.values[PARENT_KEY] = parent
    config.current.values.pop(LOCK_KEY, None)


def prepare_rollback(config: VmConfig) -> None:
    config.current.values[LOCK_KEY] = "rollback"


def commit_rollback(config: VmConfig, name: str) -> list[str]:
    """The current values become the snapshot's (__snapshot_apply_config): the description
    and ``unusedN`` stay, pending changes go, the VM's own volumes the snapshot does not use
    become ``unusedN``; the current values derive from the snapshot. Returns the volumes
    that became unused."""
    snapshot = config.snapshots[name]
    kept = {key: value for key, value in config.current.values.items()
            if re.fullmatch(r"unused\d+", key)}
    in_snapshot = {file for _, file in drive_files([snapshot])}
    leaving = [file for key, file in drive_files([config.current])
               if not key.startswith("unused") and file not in in_snapshot
               and file not in kept.values() and storage.owned_image(file, config.vmid)]
    config.current = Section({**copy_values(snapshot.values), **kept}, config.current.description)
    config.pending = Section()
    for volid in leaving:
        number = next(n for n in range(256) if f"unused{n}" not in config.current.values)
        config.current.values[f"unused{number}"] = volid
    config.current.values[PARENT_KEY] = name
    return leaving


@dataclass(frozen=True)
class SnapshotEntry:
    """One entry of ``qm listsnapshot``: a snapshot, or ``current`` (no snaptime)."""

    name: str
    parent: str | None
    description: str
    snaptime: int | None = None
    snapstate: str | None = None
    vmstate: bool = False
    running: bool | None = None

    def as_json(self) -> dict[str, object]:
        """As the API's snapshot list (GET /nodes/{node}/qemu/{vmid}/snapshot)."""
        entry: dict[str, object] = {"name": self.name, "description": self.description}
        if self.parent is not None:
            entry["parent"] = self.parent
        if self.snaptime is not None:
            entry["snaptime"] = self.snaptime
            entry["vmstate"] = int(self.vmstate)
        if self.snapstate is not None:
            entry["snapstate"] = self.snapstate
        if self.running is not None:
            entry["running"] = int(self.running)
        return entry


def entries(config: VmConfig, *, running: bool) -> list[SnapshotEntry]:
    """Every snapshot, then ``current`` (qemu-server's snapshot_list)."""
    result = []
    for name, section in sorted(config.snapshots.items()):
        values = section.values
        snaptime = values.get(SNAPTIME_KEY, "")
        result.append(SnapshotEntry(name, values.get(PARENT_KEY), section.description or "",
                                    int(snaptime) if snaptime.isdigit() else 0,
                                    values.get(SNAPSTATE_KEY), VMSTATE_KEY in values))
    result.append(SnapshotEntry("current", config.current.values.get(PARENT_KEY),
                                CURRENT_DESCRIPTION, running=running))
    return result

"""What each node's agent applied, where every node reads it: ``etc/pve/qdisk/nodes/<node>.json``
on pmxcfs, and the cluster's view built from all of them.

One small file per node, written by that node's agent only, and only when something in
it changed (pmxcfs replicates every write to every node: no periodic rewriting, no
heartbeat). Per VM running on the node: per disk the settings the agent applied, the
cache options each qcow2 image has in QEMU now, when they last changed, and any problem;
and the VM's own problem (locked, a block job, a damaged settings file), with whether the
agent retries. A VM that stops or leaves the node leaves the file.

The view (``qdisk pve audit --all-nodes``) compares every VM's stored settings with the
file of the node it runs on: applied, pending on that node (its agent has not applied
these settings yet, or retries), failing (and why), or not running anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdisk.errors import QdiskError
from qdisk.pve.cachesettings import (
    PMXCFS_DIR_MODE,
    print_settings_value,
    read_settings,
    replace_file,
)
from qdisk.pve.host import PveError, PveHost

# A disk's values: per qcow2 image qdisk tuned, top first, its file and QEMU cache options.
Values = tuple[tuple[str, Mapping[str, int]], ...]


def status_time() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class DiskStatus:
    settings: str | None
    values: Values
    at: str
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "at": self.at, "problem": self.problem,
                "values": [{"filename": name, "cache": dict(options)}
                           for name, options in self.values]}

    @classmethod
    def from_json(cls, data: Any) -> DiskStatus:
        return cls(data["settings"], tuple((str(value["filename"]), dict(value["cache"]))
                                           for value in data["values"]),
                   str(data["at"]), data["problem"])


@dataclass(frozen=True)
class VmStatus:
    disks: Mapping[str, DiskStatus] = field(default_factory=dict)
    problem: str | None = None
    retrying: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"problem": self.problem, "retrying": self.retrying,
                "disks": {key: disk.as_json() for key, disk in self.disks.items()}}

    @classmethod
    def from_json(cls, data: Any) -> VmStatus:
        return cls({str(key): DiskStatus.from_json(disk) for key, disk in data["disks"].items()},
                   data["problem"], bool(data["retrying"]))


def parse_node_status(text: str) -> dict[int, VmStatus] | None:
    """The VMs of a node's file; None when it is not one qdisk wrote."""
    try:
        data = json.loads(text)
        return {int(vmid): VmStatus.from_json(vm) for vmid, vm in data["vms"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_node_status(path: Path) -> dict[int, VmStatus] | None:
    """None: no file (no agent ever ran there) or a damaged one."""
    try:
        return parse_node_status(path.read_text(encoding="utf-8"))
    except OSError:
        return None


@dataclass
class NodeStatusFile:
    """This node's file: ``vms`` as the agent keeps it, written by :meth:`save` only when
    its text differs from what is there."""

    path: Path
    vms: dict[int, VmStatus] = field(default_factory=dict)
    _written: str | None = None

    def load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return
        vms = parse_node_status(text)
        if vms is not None:
            self.vms, self._written = vms, text

    def remove_leftovers(self) -> None:
        """Temporary files of a write an earlier agent of this node did not finish."""
        for leftover in self.path.parent.glob(f"{self.path.name}.tmp.*"):
            with contextlib.suppress(OSError):  # read-only now: the next agent's start
                leftover.unlink(missing_ok=True)

    def text(self) -> str:
        return json.dumps({"node": self.path.stem,
                           "vms": {str(vmid): self.vms[vmid].as_json() for vmid in sorted(self.vms)}},
                          sort_keys=True, separators=(",", ":")) + "\n"

    def save(self) -> bool:
        """Write the file if it changed; whether it was written. Raises PveError (e.g.
        pmxcfs read-only without quorum)."""
        text = self.text()
        if text == self._written:
            return False
        # etc/pve/qdisk/ may not exist yet; etc/pve itself is never made (pmxcfs's).
        try:
            os.mkdir(self.path.parent.parent, PMXCFS_DIR_MODE)
        except FileExistsError:
            pass
        except OSError as error:
            raise PveError(f"{self.path.parent.parent}: cannot make it: {error.strerror}") from None
        replace_file(self.path, text)
        self._written = text
        return True


# --- the cluster's view ---------------------------------------------------------------------


@dataclass(frozen=True)
class SettingsState:
    """Where a VM's settings stand: ``applied``, ``pending`` or ``failing`` on ``node``,
    ``stopped`` (not running on a node with an agent), or ``none`` (no settings, nothing
    applied); ``reasons`` say what is pending or failing."""

    state: str
    node: str | None
    reasons: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "node": self.node, "reasons": list(self.reasons)}


def cluster_view(host: PveHost, vms: Mapping[int, str]) -> dict[int, SettingsState]:
    """The state of each VM of ``vms`` (vmid -> the node whose directory has its config)."""
    statuses = {node: read_node_status(host.paths.node_status(node)) for node in host.nodes()}
    return {vmid: _state(host, vmid, home, statuses) for vmid, home in vms.items()}


def _state(host: PveHost, vmid: int, home: str,
           statuses: Mapping[str, dict[int, VmStatus] | None]) -> SettingsState:
    running = sorted(node for node, vms in statuses.items() if vms is not None and vmid in vms)
    try:
        settings = read_settings(host.paths.cache_settings(vmid), vmid)
    except QdiskError as error:
        return SettingsState("failing", home if home in running or not running else running[0],
                             (str(error),))
    if not running:
        if not settings:
            return SettingsState("none", None)
        if statuses.get(home) is None:
            return SettingsState("pending", home, (f"no agent has recorded anything on {home}",))
        return SettingsState("stopped", home, ("applied at its next start",))
    node = home if home in running else running[0]
    status = statuses[node]
    assert status is not None
    vm = status[vmid]
    if vm.problem is not None:
        return SettingsState("pending" if vm.retrying else "failing", node, (vm.problem,))
    pending, failing = [], []
    for key in sorted({*settings, *vm.disks}):
        wanted = print_settings_value(settings[key]) if key in settings else None
        disk = vm.disks.get(key)
        if disk is None or disk.settings != wanted:
            pending.append(f"{key}: not yet applied by the agent of {node}")
        elif disk.problem is not None:
            failing.append(disk.problem)
    if failing:
        return SettingsState("failing", node, tuple(failing))
    if pending:
        return SettingsState("pending", node, tuple(pending))
    if not settings and not any(disk.values for disk in vm.disks.values()):
        return SettingsState("none", node)
    return SettingsState("applied", node, tuple(
        f"{key} at {disk.at}" for key, disk in sorted(vm.disks.items()) if disk.settings))

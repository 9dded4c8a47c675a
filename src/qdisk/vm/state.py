"""A VM's runtime state: its run files, its QEMU process and what qdisk applied to it.

A VM runs as a daemonized QEMU whose pid file, QMP socket, VNC socket, log and applied
state live in the layout's run directory. Its QEMU is the live process the pid file
names whose command line names the VM's QMP socket or pid file, compared as resolved
paths, so any spelling of the home (a symlink, a relative path, a trailing slash) finds
it; without a usable pid file, while the QMP socket is there, any live process told that
socket. A QEMU that died on its own, or a reused pid, is stopped; run files are removed
only then.

QEMU reports the cache sizes it uses nowhere, so what was applied is kept in the VM's
state file, written at start and after each live change::

    {"syntax": "blockdev", "pid": 1234,
     "disks": {"scsi0": {"nodes": [{"node-name": "f...", "filename": "/...qcow2",
                                    "cache": {"l2-cache-size": 4294967296}}, ...]}}}

Each disk lists its qcow2 nodes that qdisk named, top first, down the backing chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qdisk.qemu.command import Syntax
from qdisk.qemu.reopen import AppliedNode
from qdisk.settings import Settings
from qdisk.system import fileio, processes
from qdisk.system.layout import RunFiles
from qdisk.vm.errors import VmRefusedError


@dataclass
class VmState:
    """What a running VM was started with and what was applied to it since."""

    syntax: Syntax
    pid: int
    disks: dict[str, list[AppliedNode]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"syntax": self.syntax, "pid": self.pid,
                "disks": {key: {"nodes": [node.as_json() for node in nodes]}
                          for key, nodes in self.disks.items()}}

    @classmethod
    def from_json(cls, data: object) -> VmState | None:
        """The state in ``data``; None when it is not a state file qdisk wrote."""
        if not isinstance(data, dict) or data.get("syntax") not in ("blockdev", "drive") \
                or not isinstance(data.get("disks"), dict) or not isinstance(data.get("pid"), int):
            return None
        try:
            disks = {key: [AppliedNode.from_json(node) for node in disk["nodes"]]
                     for key, disk in data["disks"].items()}
        except (KeyError, TypeError):
            return None
        return cls(data["syntax"], data["pid"], disks)


def read_state(settings: Settings, vmid: int) -> VmState | None:
    """VM ``vmid``'s state file; None when it is missing, unreadable or not qdisk's."""
    try:
        data = json.loads(settings.layout.run_files(vmid).state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return VmState.from_json(data)


def write_state(settings: Settings, vmid: int, state: VmState) -> None:
    fileio.atomic_write(settings.layout.run_files(vmid).state,
                        json.dumps(state.as_json(), indent=2) + "\n", home=settings.home)


# --- the VM's QEMU ----------------------------------------------------------------------------


def _is_vm_qemu(pid: int, files: RunFiles) -> bool:
    """Whether ``pid`` is the QEMU of these run files: its command line names their QMP
    socket or pid file (compared resolved, so any spelling of the home matches)."""
    return (processes.mentions_path(pid, files.qmp, prefix="path=", suffix=",")
            or processes.mentions_path(pid, files.pid))


def running_pid(settings: Settings, vmid: int) -> int | None:
    """The pid of VM ``vmid``'s QEMU, or None when it is not running (see the module)."""
    files = settings.layout.run_files(vmid)
    try:
        pid: int | None = int(files.pid.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and processes.alive(pid) and _is_vm_qemu(pid, files):
        return pid
    if not files.qmp.exists():
        return None  # no QEMU made the socket: nothing to look for (vm list stays cheap)
    for other in processes.pids():
        if other != pid and processes.mentions_path(other, files.qmp, prefix="path=", suffix=",") \
                and processes.alive(other):
            return other
    return None


def remove_run_files(settings: Settings, vmid: int) -> None:
    """Remove a stopped VM's run files (the caller has made sure no QEMU of the VM lives);
    refuses to touch a directory where one of them belongs."""
    for path in settings.layout.run_files(vmid).of_a_running_vm():
        if path.is_dir() and not path.is_symlink():
            raise VmRefusedError(f"VM {vmid}: '{path}' is a directory, where qdisk keeps one "
                                 f"of the VM's run files: remove it")
        path.unlink(missing_ok=True)


def run_files_left(settings: Settings, vmid: int) -> bool:
    return any(path.exists() for path in settings.layout.run_files(vmid).of_a_running_vm())

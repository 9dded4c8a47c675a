"""What a VM looks like from outside: ``qm config``, ``qm pending``, ``qm list``, its
status and ``qm showcmd``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk import storage
from qdisk.config.vmconfig import pending_delete_flags, section_values
from qdisk.errors import QdiskError
from qdisk.qemu.command import Syntax, Version, VmCommand, build_command, parse_version
from qdisk.settings import Settings
from qdisk.system.tools import process_memory
from qdisk.system.tools import qemu_version as installed_qemu_version
from qdisk.vm import store
from qdisk.vm.journal import vm_lock
from qdisk.vm.state import VmState, read_state, remove_run_files, run_files_left, running_pid


@dataclass(frozen=True)
class ConfigView:
    """``qm config``: the values, and the digest of the file they were read from."""

    values: dict[str, str]
    digest: str


def config_view(settings: Settings, vmid: int, *, current: bool = False) -> ConfigView:
    """The values with pending changes merged, or (``current``) the applied ones; the
    description as ``description``."""
    config = store.load(settings, vmid)
    values = section_values(config.current) if current else config.merged()
    assert config.digest is not None  # a loaded config has one
    return ConfigView(values, config.digest)


def config_values(settings: Settings, vmid: int, *, current: bool = False) -> dict[str, str]:
    return config_view(settings, vmid, current=current).values


@dataclass(frozen=True)
class PendingItem:
    """One key of ``qm pending``: its applied value, its pending value, and whether a
    deletion is pending (``delete``: 0, 1, or 2 for a forced deletion)."""

    key: str
    value: str | None = None
    pending: str | None = None
    delete: int = 0

    def as_json(self) -> dict[str, Any]:
        """As ``qm pending --output-format json`` (absent values left out)."""
        item: dict[str, Any] = {"key": self.key}
        if self.value is not None:
            item["value"] = self.value
        if self.pending is not None:
            item["pending"] = self.pending
        item["delete"] = self.delete
        return item


def pending_items(settings: Settings, vmid: int) -> list[PendingItem]:
    """``qm pending``: every key with an applied value, a pending one or a pending deletion."""
    config = store.load(settings, vmid)
    current = section_values(config.current)
    new = {key: value for key, value in section_values(config.pending).items() if key != "delete"}
    deletions = pending_delete_flags(config)
    return [PendingItem(key, current.get(key), new.get(key),
                        (2 if deletions[key] else 1) if key in deletions else 0)
            for key in sorted(set(current) | set(new) | set(deletions))]


@dataclass(frozen=True)
class VmStatus:
    """A VM's QEMU pid (None: stopped), its QMP socket and the state applied to it."""

    vmid: int
    pid: int | None
    qmp: Path
    state: VmState | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def status(self) -> str:
        return "running" if self.running else "stopped"

    def memory(self) -> dict[str, int]:
        """QEMU's ``VmSize``/``VmRSS`` in bytes (empty when stopped)."""
        return process_memory(self.pid) if self.pid is not None else {}

    def as_json(self) -> dict[str, Any]:
        memory = self.memory()
        state = self.state.as_json() if self.state is not None else {}
        return {"vmid": self.vmid, "status": self.status, "pid": self.pid,
                "qmp": str(self.qmp),
                "syntax": state.get("syntax"), "disks": state.get("disks", {}),
                "memory": {"vm-size": memory.get("VmSize"), "vm-rss": memory.get("VmRSS")}}


def status(settings: Settings, vmid: int, *, clean_up: bool = True) -> VmStatus:
    """Whether VM ``vmid`` runs, and the state applied to it. The run files of a QEMU that
    died on its own are removed (``clean_up``)."""
    store.load(settings, vmid)
    qmp = settings.layout.run_files(vmid).qmp
    pid = running_pid(settings, vmid)
    if pid is None:
        if clean_up and run_files_left(settings, vmid):
            with vm_lock(settings, vmid):
                # A start may have run meanwhile: look again under the lock.
                if running_pid(settings, vmid) is None:
                    remove_run_files(settings, vmid)
        return VmStatus(vmid, None, qmp)
    return VmStatus(vmid, pid, qmp, read_state(settings, vmid))


@dataclass(frozen=True)
class VmSummary:
    """One VM of ``qm list``; ``problem``: why its config cannot be read (its name is then
    unknown; its status comes from its run files, which need no config)."""

    vmid: int
    name: str | None
    status: str
    problem: str | None = None


def list_vms(settings: Settings) -> list[VmSummary]:
    """Every VM with a config: id, name and status (``qm list``). A config that cannot be
    read is listed with its problem; the others are listed all the same."""
    summaries = []
    for vmid in store.list_vmids(settings):
        name, problem = None, None
        try:
            name = store.load(settings, vmid).current.values.get("name")
        except QdiskError as error:
            problem = str(error)
        running = running_pid(settings, vmid) is not None
        summaries.append(VmSummary(vmid, name, "running" if running else "stopped", problem))
    return summaries


def vm_command(settings: Settings, vmid: int, *, qemu_version_text: str | None = None,
               syntax: Syntax | None = None, accel: str | None = None) -> VmCommand:
    """The command of VM ``vmid`` from its config and storage.cfg under ``settings.home``.

    The QEMU version is ``qemu_version_text``, else the installed ``qemu-system``'s (asked
    only when the config pins no machine version and no ``syntax`` is forced).
    """
    config = store.load(settings, vmid)

    def version() -> Version:
        if qemu_version_text is not None:
            return parse_version(qemu_version_text)
        return installed_qemu_version(settings.tools.qemu_system)

    return build_command(config, storage.load(settings), settings, qemu_version=version,
                         syntax=syntax, accel=accel)

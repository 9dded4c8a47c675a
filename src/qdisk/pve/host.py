"""A Proxmox VE host as qdisk finds it: its nodes, VM configs, storages and running VMs.

Everything is read from the host's own files (:class:`~qdisk.system.layout.PveLayout`, under
``QDISK_PVE_ROOT``, default ``/``); nothing here writes. The node is the host name
(``QDISK_PVE_NODE`` overrides), as Proxmox VE names its nodes. A VM's config lives in
the directory of the node it belongs to; every node's are visible on every node.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qdisk.config.drive import Drive, drive_keys, parse_drive
from qdisk.config.text import read_config
from qdisk.config.vmconfig import VmConfig, check_vmid, drive_items, parse_vm_config
from qdisk.errors import InvalidInputError, QdiskError
from qdisk.image.info import has_protocol
from qdisk.qemu.nodes import Disk
from qdisk.settings import Tools
from qdisk.storage import StorageConfig, StorageError, parse_storage_cfg
from qdisk.system import processes
from qdisk.system.layout import Layout, PveLayout

ROOT_ENV = "QDISK_PVE_ROOT"
NODE_ENV = "QDISK_PVE_NODE"
# Buses whose drives are VM disks with a qcow2 cache (efidisk0, tpmstate0: firmware state).
DISK_BUSES = ("ide", "sata", "scsi", "virtio")
_CONFIG_NAME_RE = re.compile(r"([1-9][0-9]{2,8})\.conf")


class PveRefusedError(InvalidInputError):
    """The request does not fit the host (no such VM or node, a lock, a VM not running
    here); names the VM and the reason."""


class PveError(QdiskError):
    """An operation on the host failed (a lock held too long, QEMU unreachable)."""


@dataclass(frozen=True)
class HostVm:
    """A VM of the cluster: its id, the node whose directory holds its config, the config."""

    vmid: int
    node: str
    config: VmConfig

    @property
    def lock(self) -> str | None:
        """The operation the config is locked for (backup, migrate, snapshot, ...)."""
        return self.config.current.values.get("lock")

    @property
    def name(self) -> str | None:
        return self.config.current.values.get("name")

    def drive(self, key: str) -> Drive:
        """The drive ``key`` as the VM runs it (the current section, not ``[PENDING]``)."""
        text = self.config.current.values.get(key)
        if text is None:
            raise PveRefusedError(f"VM {self.vmid} has no drive {key}")
        return parse_drive(key, text).drive

    def disk_lines(self) -> list[tuple[str, str]]:
        """The drive lines of the disk buses (ide, sata, scsi, virtio), in qemu-server's
        order; CD-ROMs and empty drives among them are told apart by :func:`is_disk`."""
        return [(key, text) for key, text in drive_items(self.config.current.values)
                if re.sub(r"\d+$", "", key) in DISK_BUSES]


_DRIVE_ORDER = {key: position for position, key in enumerate(drive_keys())}


def in_drive_order(keys: Iterable[str]) -> list[str]:
    """Drive keys in qemu-server's order (ide, scsi, virtio, sata, ...)."""
    return sorted(keys, key=lambda key: _DRIVE_ORDER.get(key, len(_DRIVE_ORDER)))


def is_disk(drive: Drive) -> bool:
    return not drive.is_cdrom and drive.file != "none"


@dataclass(frozen=True)
class PveHost:
    """The host's paths (``paths.node`` is this node, ``layout`` its VM configs and run
    files) and the QEMU tools."""

    paths: PveLayout
    tools: Tools
    layout: Layout = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", self.paths.layout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PveHost:
        env = os.environ if environ is None else environ
        root = Path(env.get(ROOT_ENV) or "/")
        # Proxmox VE's node name is the short host name (PVE::INotify::nodename).
        node = env.get(NODE_ENV) or socket.gethostname().split(".", 1)[0]
        return cls(PveLayout(root, node), Tools.from_env(env))

    @property
    def node(self) -> str:
        return self.paths.node

    def check(self) -> None:
        """Refuse a root that holds no Proxmox VE cluster file system."""
        if not self.paths.nodes_dir.is_dir():
            raise PveRefusedError(f"{self.paths.nodes_dir}: not a Proxmox VE host (no cluster "
                                  f"file system there; set {ROOT_ENV} to the host's root)")

    def nodes(self) -> list[str]:
        self.check()
        return sorted(entry.name for entry in self.paths.nodes_dir.iterdir() if entry.is_dir())

    def vmids(self, node: str) -> list[int]:
        """The VMs whose configs are in ``node``'s directory, ascending."""
        try:
            names = os.listdir(self.paths.node_config_dir(node))
        except FileNotFoundError:
            return []
        return sorted(int(match.group(1)) for name in names
                      if (match := _CONFIG_NAME_RE.fullmatch(name)))

    def load_vm(self, node: str, vmid: int) -> HostVm:
        path = self.paths.node_vm_config(node, vmid)
        try:
            text = read_config(path)
        except OSError as error:
            raise PveRefusedError(f"VM {vmid}: cannot read '{path}': {error.strerror}") from None
        return HostVm(vmid, node, parse_vm_config(text, vmid))

    def find_vm(self, vmid: int) -> HostVm:
        """VM ``vmid``, on whichever node its config is (this node's looked at first)."""
        check_vmid(vmid)
        nodes = self.nodes()
        for node in sorted(nodes, key=lambda name: name != self.node):
            if self.paths.node_vm_config(node, vmid).is_file():
                return self.load_vm(node, vmid)
        raise PveRefusedError(f"VM {vmid} does not exist (no {vmid}.conf under "
                              f"{self.paths.nodes_dir}/*/qemu-server)")

    def storage_config(self) -> StorageConfig:
        path = self.paths.storage_cfg
        try:
            text = read_config(path)
        except FileNotFoundError:
            return StorageConfig(config_dir=self.paths.cluster_dir)
        except OSError as error:
            raise StorageError(f"{path}: cannot read: {error.strerror}") from None
        return parse_storage_cfg(text, source=str(path), config_dir=self.paths.cluster_dir)

    def running_pid(self, vmid: int) -> int | None:
        """The pid of VM ``vmid``'s QEMU on this node: the live process its pid file names,
        told the VM's QMP socket (qemu-server always writes the pid file)."""
        files = self.layout.run_files(vmid)
        try:
            pid = int(files.pid.read_text().strip())
        except (OSError, ValueError):
            return None
        if processes.alive(pid) and processes.mentions_path(pid, files.qmp, prefix="path=",
                                                            suffix=","):
            return pid
        return None

    def unreadable_reason(self, vm: HostVm, disk: Disk) -> str | None:
        """Why this node cannot read the disk's image (None: it can): a volume on the
        network that QEMU reaches itself, another node's local storage, a storage that is
        not on this node."""
        volume = disk.volume
        if volume is None:
            return "an empty drive"
        if volume.remote is not None or has_protocol(volume.path):
            kind = f"storage '{volume.storage.id}' (type {volume.storage.type})" \
                if volume.storage else "a network volume"
            return (f"on {kind}, which QEMU reaches over the network: qdisk reads images from "
                    f"this node's files and devices only")
        storage = volume.storage
        if storage is not None and "nodes" in storage.options:
            allowed = [name.strip() for name in storage.options["nodes"].split(",")]
            if self.node not in allowed:
                return f"storage '{storage.id}' is not available on node {self.node}"
        if vm.node != self.node and (storage is None or not storage.shared):
            where = f"local storage '{storage.id}'" if storage is not None else "a local path"
            return (f"on {where} of node {vm.node}, not readable from node {self.node}: run "
                    f"qdisk on {vm.node}")
        return None


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): a pid and its start time name one
    process, a pid alone may be reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold blanks): state is the 3rd, starttime the 22nd.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None

"""A simulated Proxmox VE host tree (two nodes, pve1 is "this" one), its images, and VMs
started the way qemu-server starts them: QEMU run directly (not through qdisk) with the
arguments qemu-server generates for the configs (qdisk's ``build_command`` renders
qemu-server's graph), its QMP socket and pid file at Proxmox VE's paths, paused before
the guest runs (block nodes need no guest)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qdisk.config.text import read_config
from qdisk.config.vmconfig import parse_vm_config
from qdisk.qemu.command import Syntax, build_command
from qdisk.qemu.qmp import QmpConnection
from qdisk.settings import Settings, Tools
from qdisk.storage import parse_storage_cfg
from qdisk.system.tools import qemu_version

from qemu_helpers import address_space, kill_and_wait

THIS_NODE = "pve1"
OTHER_NODE = "pve2"
GIB = 2**30
MIB = 2**20
# Address space QEMU may gain or lose besides the caches (threads, QMP buffers).
NOISE = 64 * MIB
# How long QEMU may take to daemonize (TCG on a loaded 2-core machine included).
QEMU_TIMEOUT = 120
# One malloc arena: VmSize then moves with the caches, not with QEMU's threads' arenas.
QEMU_ENV = {"MALLOC_ARENA_MAX": "1"}


def storage_cfg(root: Path) -> str:
    return (f"dir: local\n\tpath {root}/var/lib/vz\n\tcontent images,iso,snippets\n\n"
            f"dir: vc\n\tpath {root}/srv/vc\n\tcontent images\n\tsnapshot-as-volume-chain 1\n\n"
            f"dir: shared\n\tpath {root}/srv/shared\n\tcontent images\n\tshared 1\n\n"
            f"rbd: ceph\n\tpool rbd\n\tcontent images\n\tmonhost 10.0.0.1\n")


@dataclass
class PveTree:
    """A host tree under ``root``; ``started`` are the QEMUs to kill at the end."""

    root: Path
    started: list[int] = field(default_factory=list)

    @property
    def pve(self) -> Path:
        return self.root / "etc" / "pve"

    @property
    def run_dir(self) -> Path:
        return self.root / "var" / "run" / "qemu-server"

    def config_path(self, vmid: int, node: str = THIS_NODE) -> Path:
        return self.pve / "nodes" / node / "qemu-server" / f"{vmid}.conf"

    def settings_path(self, vmid: int) -> Path:
        return self.pve / "qdisk" / f"{vmid}.conf"

    def record(self, vmid: int) -> dict[str, Any]:
        path = self.root / "var" / "run" / "qdisk" / f"{vmid}.state.json"
        return dict(json.loads(path.read_text()))

    def write_vm(self, vmid: int, lines: dict[str, str], node: str = THIS_NODE,
                 extra: str = "") -> None:
        path = self.config_path(vmid, node)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{key}: {value}\n" for key, value in lines.items()) + extra)

    def image(self, storage_dir: str, vmid: int, name: str, size: str, *options: str) -> Path:
        """``qemu-img create`` in ``<storage>/images/<vmid>/`` (run there: relative backing names)."""
        path = self.root / storage_dir / "images" / str(vmid) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "raw" if name.endswith(".raw") else "qcow2"
        result = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), size],
                                capture_output=True, text=True, cwd=path.parent)
        assert result.returncode == 0, result.stderr
        return path

    def proxmox_files(self) -> dict[Path, bytes]:
        """Every file of Proxmox VE's that qdisk must never change: storage.cfg, VM configs,
        and the users, token secrets and keys where a test has them."""
        access = [self.pve / name for name in ("user.cfg", "priv/token.cfg", "authkey.pub",
                                               "authkey.pub.old", "pve-www.key")]
        files = [self.pve / "storage.cfg", *sorted(self.pve.glob("nodes/*/qemu-server/*.conf")),
                 *(path for path in access if path.exists())]
        return {path: path.read_bytes() for path in files}

    # --- QEMU as qemu-server starts it ---------------------------------------------------

    def qemu_argv(self, vmid: int, syntax: Syntax, *, node: str = THIS_NODE,
                  run_dir: Path | None = None) -> list[str]:
        """qemu-server's command for the VM's config: -blockdev (machine >= 10.0) without
        what the installed QEMU lacks (7.2: discard-no-unref), or -drive without node names
        (QEMU names the nodes itself); the run files in ``run_dir`` (default: qemu-server's)."""
        config = parse_vm_config(read_config(self.config_path(vmid, node)), vmid)
        storage = parse_storage_cfg(read_config(self.pve / "storage.cfg"), config_dir=self.pve)
        settings = Settings(home=self.root / "build", tools=Tools())
        command = build_command(config, storage, settings,
                                qemu_version=lambda: qemu_version(settings.tools.qemu_system),
                                syntax=syntax, accel="tcg")
        run = str(run_dir or self.run_dir)
        argv = [argument.replace(str(settings.layout.run_dir), run) for argument in command.argv]
        for position in range(1, len(argv)):
            if argv[position - 1] == "-blockdev":
                argv[position] = json.dumps(_without(json.loads(argv[position]), "discard-no-unref"))
            elif argv[position - 1] == "-drive":
                argv[position] = ",".join(part for part in argv[position].split(",")
                                          if not part.startswith(("node-name=", "file.node-name=")))
        return argv

    def start(self, vmid: int, syntax: Syntax = "blockdev", *, node: str = THIS_NODE,
              run_dir: Path | None = None, extra: tuple[str, ...] = ()) -> int:
        """Start the VM paused (``-S``); returns QEMU's pid (also kept in ``started``)."""
        run = run_dir or self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        pid_file = run / f"{vmid}.pid"
        pid_file.unlink(missing_ok=True)
        try:
            result = subprocess.run([*self.qemu_argv(vmid, syntax, node=node, run_dir=run), "-S",
                                     *extra], capture_output=True, text=True,
                                    timeout=QEMU_TIMEOUT, env={**os.environ, **QEMU_ENV})
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.started.append(int(pid_file.read_text()))
        assert result.returncode == 0, f"QEMU refused: {result.stderr.strip()}"
        return int(pid_file.read_text())

    def qmp(self, vmid: int, run_dir: Path | None = None) -> QmpConnection:
        return QmpConnection((run_dir or self.run_dir) / f"{vmid}.qmp")

    def kill_all(self) -> None:
        for pid in self.started:
            kill_and_wait(pid)


def _without(node: Any, option: str) -> Any:
    if isinstance(node, dict):
        return {key: _without(value, option) for key, value in node.items() if key != option}
    return node


def vm_size(pid: int) -> int:
    """QEMU's address space without its stacks, in bytes: it reserves each qcow2 cache there."""
    return address_space(pid)


def make_tree(root: Path) -> PveTree:
    """The host: storages, and the VMs every test finds (their images made here).

    - 100 (pve1): scsi0 32 TiB thin qcow2 in an I/O thread (Proxmox VE's default); scsi1 a linked clone of template 900's base;
      scsi2 on a volume chain (128 KiB clusters and extended L2 over a 64 KiB base);
      scsi3 raw; ide2 a CD-ROM drive.
    - 101 (pve1): a pinned machine older than 10.0 (qemu-server starts it with -drive).
    - 102 (pve1): locked by a backup.
    - 200 (pve2): disks on pve2's local storage, on shared storage and on Ceph RBD.
    - 103 (pve2): locked by its migration to pve1 (shared storage).
    """
    tree = PveTree(root)
    (tree.pve / "nodes" / OTHER_NODE / "qemu-server").mkdir(parents=True)
    (tree.pve / "priv" / "lock").mkdir(parents=True)
    (tree.pve / "storage.cfg").write_text(storage_cfg(root))
    os.symlink(f"nodes/{THIS_NODE}/qemu-server", tree.pve / "qemu-server")
    local = "var/lib/vz"
    tree.image(local, 100, "vm-100-disk-0.qcow2", "32T")
    tree.image(local, 900, "base-900-disk-0.qcow2", "4T")
    tree.image(local, 100, "vm-100-disk-1.qcow2", "4T", "-b", "../900/base-900-disk-0.qcow2",
               "-F", "qcow2")
    tree.image("srv/vc", 100, "snap-s1-vm-100-disk-2.qcow2", "2T")
    tree.image("srv/vc", 100, "vm-100-disk-2.qcow2", "2T", "-b", "snap-s1-vm-100-disk-2.qcow2",
               "-F", "qcow2", "-o", "extended_l2=on,cluster_size=128k")
    tree.image(local, 100, "vm-100-disk-3.raw", "1M")
    tree.write_vm(100, {
        "hookscript": "local:snippets/qdisk-hook.sh", "memory": "32", "name": "db",
        "parent": "s1", "scsihw": "virtio-scsi-single",
        "ide2": "none,media=cdrom",
        "scsi0": "local:100/vm-100-disk-0.qcow2,discard=on,iothread=1,size=32T",
        "scsi1": "local:900/base-900-disk-0.qcow2/100/vm-100-disk-1.qcow2,size=4T",
        "scsi2": "vc:100/vm-100-disk-2.qcow2,cache=writeback,size=2T",
        "scsi3": "local:100/vm-100-disk-3.raw,size=1M",
    }, extra="\n[s1]\nmemory: 32\nscsi2: vc:100/vm-100-disk-2.qcow2,cache=writeback,size=2T\n"
             "snaptime: 1754000000\n")
    tree.image(local, 101, "vm-101-disk-0.qcow2", "32T")
    tree.write_vm(101, {"machine": "pc-i440fx-7.2", "memory": "32", "scsihw": "virtio-scsi-pci",
                        "scsi0": "local:101/vm-101-disk-0.qcow2,size=32T"})
    tree.image(local, 102, "vm-102-disk-0.qcow2", "1T")
    tree.write_vm(102, {"lock": "backup", "memory": "32",
                        "scsi0": "local:102/vm-102-disk-0.qcow2,size=1T"})
    tree.image("srv/shared", 200, "vm-200-disk-1.qcow2", "1T")
    tree.write_vm(200, {"memory": "32", "name": "elsewhere", "scsihw": "virtio-scsi-pci",
                        "scsi0": "local:200/vm-200-disk-0.qcow2,size=1T",
                        "scsi1": "shared:200/vm-200-disk-1.qcow2,size=1T",
                        "virtio0": "ceph:vm-200-disk-2,size=8G"}, node=OTHER_NODE)
    # A VM migrating from pve2 to this node: its config stays on pve2, locked, until the end.
    tree.image("srv/shared", 103, "vm-103-disk-0.qcow2", "32T")
    tree.write_vm(103, {"lock": "migrate", "memory": "32", "scsihw": "virtio-scsi-pci",
                        "scsi0": "shared:103/vm-103-disk-0.qcow2,size=32T"}, node=OTHER_NODE)
    return tree


def hosted(host: PveTree, monkeypatch: pytest.MonkeyPatch) -> Iterator[PveTree]:
    """``host`` as this node's tree for the test; its QEMUs killed and Proxmox VE's files
    checked unchanged afterwards."""
    monkeypatch.setenv("QDISK_PVE_ROOT", str(host.root))
    monkeypatch.setenv("QDISK_PVE_NODE", THIS_NODE)
    for variable in ("QDISK_QEMU_SYSTEM", "QDISK_QEMU_IMG"):
        monkeypatch.delenv(variable, raising=False)
    before = host.proxmox_files()
    try:
        yield host
    finally:
        host.kill_all()
    assert host.proxmox_files() == before, "a Proxmox VE file changed"

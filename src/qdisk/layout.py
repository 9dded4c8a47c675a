"""Where qdisk's files live: VM configs, storage.cfg, locks and the run files of a VM.

A :class:`Layout` is built once from the settings and passed down; nothing else joins
paths under the home. Today's tree (``QDISK_HOME``) is one layout::

    QDISK_HOME/
      storage.cfg             storages (Proxmox VE's format)
      qemu-server/<vmid>.conf VM configs
      lock/<vmid>.lock        a VM's lock; <vmid>.alloc: images a command is creating;
                              <vmid>.snapshot: a snapshot operation under way
      run/<vmid>.{qmp,pid,vnc,log,state.json}   a running VM's files
      storage/local/          the default storage's directory
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFiles:
    """The files of one VM while it runs: QEMU's QMP socket, pid file and VNC socket (named
    in its command line), its log, and qdisk's record of what it applied."""

    qmp: Path
    pid: Path
    vnc: Path
    log: Path
    state: Path

    def of_a_running_vm(self) -> tuple[Path, ...]:
        """What goes when the VM stops (the log stays until destroy: it explains a failure)."""
        return (self.pid, self.qmp, self.vnc, self.state)


@dataclass(frozen=True)
class Layout:
    config_dir: Path
    storage_cfg: Path
    lock_dir: Path
    run_dir: Path
    default_storage_dir: Path

    @classmethod
    def under_home(cls, home: Path) -> Layout:
        return cls(config_dir=home / "qemu-server", storage_cfg=home / "storage.cfg",
                   lock_dir=home / "lock", run_dir=home / "run",
                   default_storage_dir=home.absolute() / "storage" / "local")

    def vm_config(self, vmid: int) -> Path:
        return self.config_dir / f"{vmid}.conf"

    def vm_lock(self, vmid: int) -> Path:
        """The lock a command holds while it reads, changes and writes the VM's config."""
        return self.lock_dir / f"{vmid}.lock"

    def allocation_journal(self, vmid: int) -> Path:
        """Images a command of the VM is creating, until its config names them."""
        return self.lock_dir / f"{vmid}.alloc"

    def snapshot_journal(self, vmid: int) -> Path:
        """The snapshot operation a command of the VM is carrying out, until it is done."""
        return self.lock_dir / f"{vmid}.snapshot"

    def run_files(self, vmid: int) -> RunFiles:
        return RunFiles(*(self.run_dir / f"{vmid}.{suffix}"
                          for suffix in ("qmp", "pid", "vnc", "log", "state.json")))

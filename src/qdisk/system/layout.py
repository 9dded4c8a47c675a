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

A Proxmox VE host is the other (:meth:`Layout.proxmox_ve`, and :class:`PveLayout` for
what only a host has), every path under a root (``/`` on a host)::

    etc/pve/                  pmxcfs, the cluster file system (every node sees all of it)
      storage.cfg
      nodes/<node>/qemu-server/<vmid>.conf   VM configs (qemu-server's, never written)
      qdisk/<vmid>.conf       qdisk's qcow2 cache settings of a VM, one line per drive
      qdisk/nodes/<node>.json what each node's agent applied (its running VMs' disks)
      priv/lock/<name>/       cluster-wide locks (a directory each)
      user.cfg, priv/token.cfg, authkey.pub[.old], pve-www.key   users, ACLs, API tokens,
                              the keys of login tickets and CSRF tokens (read only)
    var/run/qemu-server/<vmid>.{qmp,pid,vnc}   a running VM's files (qemu-server's)
    var/run/qdisk/<vmid>.{state.json,log,lock} qdisk's record of what it applied (this node)
    var/lock/qdisk/           qdisk's own locks
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
    """``own_run_dir``: where qdisk keeps its own files of a running VM (log, state), when
    they do not live beside QEMU's (None: in ``run_dir``)."""

    config_dir: Path
    storage_cfg: Path
    lock_dir: Path
    run_dir: Path
    default_storage_dir: Path
    own_run_dir: Path | None = None

    @classmethod
    def under_home(cls, home: Path) -> Layout:
        return cls(config_dir=home / "qemu-server", storage_cfg=home / "storage.cfg",
                   lock_dir=home / "lock", run_dir=home / "run",
                   default_storage_dir=home.absolute() / "storage" / "local")

    @classmethod
    def proxmox_ve(cls, root: Path, node: str) -> Layout:
        """Node ``node`` of a Proxmox VE host whose files are under ``root``: its VM configs,
        qemu-server's run files, and qdisk's own beside them (never in qemu-server's)."""
        host = PveLayout(root, node)
        return cls(config_dir=host.node_config_dir(node), storage_cfg=host.storage_cfg,
                   lock_dir=root / "var" / "lock" / "qdisk",
                   run_dir=root / "var" / "run" / "qemu-server",
                   default_storage_dir=root / "var" / "lib" / "vz",
                   own_run_dir=host.qdisk_run_dir)

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
        own = self.own_run_dir or self.run_dir
        return RunFiles(qmp=self.run_dir / f"{vmid}.qmp", pid=self.run_dir / f"{vmid}.pid",
                        vnc=self.run_dir / f"{vmid}.vnc", log=own / f"{vmid}.log",
                        state=own / f"{vmid}.state.json")


@dataclass(frozen=True)
class PveLayout:
    """The paths of a Proxmox VE host that only a host has: pmxcfs (``etc/pve``), every
    node's VM configs, qdisk's settings and the cluster locks there, and qdisk's run
    directory of this node (``node``). ``root`` is ``/`` on a host."""

    root: Path
    node: str

    @property
    def cluster_dir(self) -> Path:
        return self.root / "etc" / "pve"

    @property
    def storage_cfg(self) -> Path:
        return self.cluster_dir / "storage.cfg"

    @property
    def nodes_dir(self) -> Path:
        return self.cluster_dir / "nodes"

    def node_config_dir(self, node: str) -> Path:
        return self.nodes_dir / node / "qemu-server"

    def node_vm_config(self, node: str, vmid: int) -> Path:
        """The config of VM ``vmid`` if it belongs to ``node``."""
        return self.node_config_dir(node) / f"{vmid}.conf"

    @property
    def settings_dir(self) -> Path:
        return self.cluster_dir / "qdisk"

    def cache_settings(self, vmid: int) -> Path:
        """qdisk's qcow2 cache settings of VM ``vmid`` (cluster-wide: they follow the VM)."""
        return self.settings_dir / f"{vmid}.conf"

    def node_status(self, node: str) -> Path:
        """What node ``node``'s agent applied to its running VMs (every node reads it)."""
        return self.settings_dir / "nodes" / f"{node}.json"

    def cluster_lock(self, name: str) -> Path:
        return self.cluster_dir / "priv" / "lock" / name

    # Proxmox VE's users and permissions (read only; see qdisk.pve.access).

    @property
    def user_cfg(self) -> Path:
        """Users, groups, roles, ACLs, pools and API tokens."""
        return self.cluster_dir / "user.cfg"

    @property
    def token_cfg(self) -> Path:
        """The API tokens' secrets (root only)."""
        return self.cluster_dir / "priv" / "token.cfg"

    @property
    def authkey_pub(self) -> Path:
        """The public key that verifies login tickets; its mtime is the key's age."""
        return self.cluster_dir / "authkey.pub"

    @property
    def authkey_pub_old(self) -> Path:
        """The previous key, kept after a rotation."""
        return self.cluster_dir / "authkey.pub.old"

    @property
    def www_key(self) -> Path:
        """The secret CSRF prevention tokens derive from."""
        return self.cluster_dir / "pve-www.key"

    @property
    def qdisk_run_dir(self) -> Path:
        return self.root / "var" / "run" / "qdisk"

    @property
    def agent_lock(self) -> Path:
        """Held by this node's agent while it runs: one agent per node."""
        return self.qdisk_run_dir / "agent.lock"

    def apply_lock(self, vmid: int) -> Path:
        """This node's lock of a running VM's record and QMP sessions."""
        return self.qdisk_run_dir / f"{vmid}.lock"

    def qemu_server_lock(self, vmid: int) -> Path:
        """qemu-server's lock of VM ``vmid`` on this node (its lock_config flock), held while
        ``qm start``, ``qm set``, ``qm resize`` and the like run."""
        return self.root / "var" / "lock" / "qemu-server" / f"lock-{vmid}.conf"

    @property
    def layout(self) -> Layout:
        return Layout.proxmox_ve(self.root, self.node)

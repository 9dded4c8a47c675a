"""Helpers of the live-change area: a QDISK_HOME with a ``dir`` storage, and real VMs under
TCG started from ``build_command``, paused before the guest runs (block nodes need no
guest)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.config.drive import Drive, parse_drive
from qdisk.config.vmconfig import Section, VmConfig
from qdisk.qemu.command import Syntax, VmCommand, build_command
from qdisk.qemu.qmp import QmpConnection
from qdisk.settings import Settings, Tools
from qdisk.storage import StorageConfig
from qdisk.system.tools import qemu_version
from qdisk.vm import store
from qdisk.vm.live import initial_state
from qdisk.vm.state import write_state

from qemu_helpers import address_space

VMID = 100
# How long QEMU may take to daemonize (TCG on a loaded 2-core machine included).
QEMU_TIMEOUT = 120
GIB = 2**30
# The tests read the caches off QEMU's address space (VmSize). glibc gives each new thread
# its own 64 MiB malloc arena, and QEMU's thread pool starts workers whenever it needs
# them (the flush of a reopen), so VmSize would jump by 72 MiB at random: one arena keeps
# the noise to the threads' stacks, which address_space leaves out.
QEMU_ENV = {"MALLOC_ARENA_MAX": "1"}


@dataclass(frozen=True)
class LiveHome:
    """A QDISK_HOME with a ``dir`` storage ``local`` at ``storage``."""

    home: Path
    storage: Path

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home, tools=Tools())

    @property
    def storage_config(self) -> StorageConfig:
        return storage.load(self.settings)

    def create_qcow2(self, name: str, size: str, *options: str) -> str:
        """``qemu-img create`` of a VM image; returns its volume id."""
        path = self.storage / "images" / str(VMID) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "raw" if name.endswith(".raw") else "qcow2"
        result = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), size],
                                capture_output=True, text=True, cwd=path.parent)
        assert result.returncode == 0, result.stderr
        return f"local:{VMID}/{name}"


def make_live_home(root: Path) -> LiveHome:
    home, store = root / "home", root / "storage"
    home.mkdir(parents=True)
    store.mkdir()
    (home / "storage.cfg").write_text(f"dir: local\n\tpath {store}\n\tcontent images,iso\n")
    return LiveHome(home, store)


@dataclass
class RunningVm:
    """A paused VM; ``drives`` are the drives as applied (what QEMU runs with)."""

    live_home: LiveHome
    command: VmCommand
    pid: int
    drives: dict[str, Drive]

    @property
    def settings(self) -> Settings:
        return self.live_home.settings

    @property
    def syntax(self) -> Syntax:
        return self.command.syntax

    def qmp(self) -> QmpConnection:
        return QmpConnection(self.settings.layout.run_dir / f"{VMID}.qmp")

    def vm_size(self) -> int:
        """The QEMU process's address space without its stacks, in bytes."""
        return address_space(self.pid)

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.settings.layout.run_files(VMID).state.read_text()))

    def drive(self, key: str, extra: str) -> Drive:
        """The applied drive of ``key`` with ``extra`` appended (``key=value,...``)."""
        text = vmconfig.parse_vm_config(self.config_text, VMID).current.values[key]
        return parse_drive(key, f"{text},{extra}" if extra else text).drive

    @property
    def config_text(self) -> str:
        return store.config_path(self.settings, VMID).read_text()

    def nodes(self) -> dict[str, dict[str, Any]]:
        """query-named-block-nodes by node name."""
        with self.qmp() as qmp:
            return {node["node-name"]: node
                    for node in qmp.execute("query-named-block-nodes", {"flat": True})}


def start_vm(live_home: LiveHome, drives: dict[str, str], syntax: Syntax,
             started: list[int]) -> RunningVm:
    """Write the config, start it paused (``-S``) under TCG, write the state file as the
    lifecycle does. The pid goes into ``started`` as soon as QEMU wrote it."""
    settings = live_home.settings
    config = VmConfig(VMID, current=Section({"memory": "32", "scsihw": "virtio-scsi-pci",
                                             **drives}))
    path = store.config_path(settings, VMID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(vmconfig.print_vm_config(config))
    command = build_command(config, storage.load(settings), settings,
                            # The nodes the QEMU that runs them takes.
                            qemu_version=lambda: qemu_version(settings.tools.qemu_system), syntax=syntax,
                            accel="tcg")
    run = settings.layout.run_dir
    run.mkdir(exist_ok=True)
    pid_file = run / f"{VMID}.pid"
    try:
        result = subprocess.run([*command.argv, "-S"], capture_output=True, text=True,
                                timeout=QEMU_TIMEOUT, env={**os.environ, **QEMU_ENV})
    finally:
        # Also after a timeout: whatever QEMU wrote its pid for is killed at teardown.
        with contextlib.suppress(OSError, ValueError):
            started.append(int(pid_file.read_text()))
    assert result.returncode == 0, f"QEMU refused: {result.stderr.strip()}"
    pid = int(pid_file.read_text())
    write_state(settings, VMID, initial_state(command.syntax, command.graphs, pid))
    applied = {key: parse_drive(key, text).drive for key, text in drives.items()}
    return RunningVm(live_home, command, pid, applied)


"""The frozen configuration passed down from the CLI instead of globals.

Tool paths are overridable from the environment (as ovirt-imageio does), so a
test or a user can point qdisk at another QEMU build without touching code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from qdisk.system.layout import Layout

# Tools field -> the environment variable that overrides its default.
_TOOL_ENV = {
    "qemu_img": "QDISK_QEMU_IMG",
    "qemu_storage_daemon": "QDISK_QEMU_STORAGE_DAEMON",
    "qemu_system": "QDISK_QEMU_SYSTEM",
    "fio": "QDISK_FIO",
}


@dataclass(frozen=True)
class Tools:
    """Paths (or names looked up on PATH) of the external programs qdisk runs."""

    qemu_img: str = "qemu-img"
    qemu_storage_daemon: str = "qemu-storage-daemon"
    qemu_system: str = "qemu-system-x86_64"
    fio: str = "fio"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tools:
        env = os.environ if environ is None else environ
        # A variable that is not set leaves the field's default.
        return cls(**{name: env[var] for name, var in _TOOL_ENV.items() if var in env})


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``QDISK_HOME``, else the XDG data directory (``~/.local/share/qdisk``)."""
    env = os.environ if environ is None else environ
    if env.get("QDISK_HOME"):
        return Path(env["QDISK_HOME"])
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "qdisk"


def default_accel(environ: Mapping[str, str] | None = None) -> str | None:
    """``QDISK_ACCEL`` (``kvm`` or ``tcg``), else None: KVM when ``/dev/kvm`` is usable."""
    env = os.environ if environ is None else environ
    return env.get("QDISK_ACCEL") or None


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about its environment."""

    home: Path = field(default_factory=default_home)
    tools: Tools = field(default_factory=Tools.from_env)
    # The accelerator VMs start with (None: the VM's ``kvm`` option and /dev/kvm decide).
    accel: str | None = field(default_factory=default_accel)
    # Where every file lives, decided once from the home.
    layout: Layout = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", Layout.under_home(self.home))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls(home=default_home(environ), tools=Tools.from_env(environ),
                   accel=default_accel(environ))

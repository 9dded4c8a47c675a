"""The home's VM configs (``QDISK_HOME/qemu-server/<vmid>.conf``): where each lives, read,
locked, written atomically and listed. The format itself is :mod:`qdisk.config.vmconfig`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qdisk.config.text import read_config
from qdisk.config.vmconfig import (
    VmConfig,
    VmConfigError,
    check_vmid,
    is_vmid,
    parse_vm_config,
    print_vm_config,
)
from qdisk.settings import Settings
from qdisk.system.fileio import atomic_write, locked


def config_path(settings: Settings, vmid: int) -> Path:
    return settings.layout.vm_config(check_vmid(vmid))


def require_config(settings: Settings, vmid: int) -> None:
    """Refuse a VM without a config (before anything is created for it, such as its lock)."""
    path = config_path(settings, vmid)
    if not path.exists():
        raise _missing_config(vmid, path)


def _missing_config(vmid: int, path: Path) -> VmConfigError:
    return VmConfigError(f"VM {vmid}: configuration file '{path}' does not exist")


def load(settings: Settings, vmid: int) -> VmConfig:
    """Read and parse the config of VM ``vmid``."""
    path = config_path(settings, vmid)
    try:
        text = read_config(path)
    except FileNotFoundError:
        raise _missing_config(vmid, path) from None
    except OSError as error:
        raise VmConfigError(f"VM {vmid}: cannot read '{path}': {error.strerror}") from None
    config = parse_vm_config(text, vmid)
    # read_config decoded strict UTF-8: encoding it again gives the file's bytes.
    config.digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return config


def lock_path(settings: Settings, vmid: int) -> Path:
    """The lock a command holds while it reads, changes and writes the VM's config."""
    return settings.layout.vm_lock(check_vmid(vmid))


@contextmanager
def config_lock(settings: Settings, vmid: int) -> Iterator[None]:
    """Hold VM ``vmid``'s lock: read-modify-write cycles of its config queue up."""
    with locked(lock_path(settings, vmid), home=settings.home):
        yield


def save(settings: Settings, config: VmConfig) -> None:
    """Write the config atomically (old or new file, never a torn one). The caller holds
    :func:`config_lock` across its read, change and this write."""
    atomic_write(config_path(settings, config.vmid), print_vm_config(config), home=settings.home)


def list_vmids(settings: Settings) -> list[int]:
    """The ids of every VM with a config, in ascending order."""
    directory = settings.layout.config_dir
    if not directory.is_dir():
        return []
    return sorted(int(path.stem) for path in directory.glob("*.conf")
                  if is_vmid(path.stem))

"""A VM's lock, and crash safety: what a killed command left, the next one removes.

Config writes are atomic (:mod:`qdisk.system.fileio`). An allocation is journaled (the image
paths, in the layout's ``allocation_journal``) before ``qemu-img create`` runs; the
journal ends once the config names the images or they are removed again. Every command
that takes a VM's lock (:func:`vm_lock`) first removes journaled images the config does
not name and the temporary files of interrupted atomic writes, then finishes an
interrupted snapshot operation (:mod:`.snapshot_journal`).

A config's ``lock:`` line (a backup, a migration, a snapshot operation of Proxmox VE or
qdisk) refuses the commands ``qm`` refuses (:func:`check_unlocked`), unless skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from qdisk import storage
from qdisk.config.vmconfig import VmConfig
from qdisk.errors import QdiskError
from qdisk.settings import Settings
from qdisk.system import processes
from qdisk.system.fileio import atomic_write
from qdisk.vm import snapshot_journal, store
from qdisk.vm.errors import VmRefusedError
from qdisk.vm.snapshot_config import LOCK_KEY
from qdisk.vm.volumes import named_paths, remove_images

log = logging.getLogger(__name__)


def record(settings: Settings, vmid: int, paths: Sequence[Path]) -> None:
    """Journal ``paths`` as the images the running command of VM ``vmid`` creates."""
    atomic_write(settings.layout.allocation_journal(vmid), "".join(f"{path}\n" for path in paths),
                 home=settings.home)


def end(settings: Settings, vmid: int) -> None:
    settings.layout.allocation_journal(vmid).unlink(missing_ok=True)


def recover(settings: Settings, vmid: int) -> None:
    """Undo what a command on VM ``vmid`` killed half-way left (the caller holds the VM's
    lock, so no command is still at work)."""
    journal = settings.layout.allocation_journal(vmid)
    if journal.exists():
        listed = [Path(line) for line in journal.read_text(encoding="utf-8").splitlines() if line]
        named = _named_image_paths(settings, vmid)
        orphans = [path for path in listed
                   if not any(processes.same_path(path, other) for other in named)]
        if orphans:
            log.warning("VM %d: removing images of an interrupted command: %s", vmid,
                        ", ".join(map(str, orphans)))
        remove_images(orphans)
        journal.unlink()
    for path in (settings.layout.vm_config(vmid), settings.layout.run_files(vmid).state, journal,
                 settings.layout.snapshot_journal(vmid)):
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    snapshot_journal.recover(settings, vmid)


def _named_image_paths(settings: Settings, vmid: int) -> list[Path]:
    try:
        config = store.load(settings, vmid)
    except QdiskError:
        return []  # no config (a killed create): nothing names the images
    return named_paths(config, storage.load(settings))


@contextmanager
def vm_lock(settings: Settings, vmid: int, *, new: bool = False) -> Iterator[None]:
    """VM ``vmid``'s lock, with what an interrupted command left cleaned up first. A VM
    without a config is refused before its lock file is made, unless it is being created
    (``new``): a command on a VM that does not exist leaves nothing behind."""
    if not new:
        store.require_config(settings, vmid)
    with store.config_lock(settings, vmid):
        recover(settings, vmid)
        yield


def check_unlocked(config: VmConfig, *, skiplock: bool = False) -> None:
    """qemu-server's check_lock: refused while the config holds ``lock:``, naming the lock,
    unless ``skiplock`` (``qm --skiplock``, root's override)."""
    lock = config.current.values.get(LOCK_KEY)
    if lock and not skiplock:
        raise VmRefusedError(f"VM {config.vmid} is locked ({lock})")

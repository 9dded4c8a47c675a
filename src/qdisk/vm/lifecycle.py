"""``start``, ``stop`` and ``destroy`` of a VM, as ``qm`` does them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.config.vmoptions import accelerator, read_options
from qdisk.errors import InvalidInputError
from qdisk.qemu.command import Syntax, build_command
from qdisk.qemu.qmp import QmpConnection, QmpError
from qdisk.settings import Settings
from qdisk.system import fileio, processes
from qdisk.system.tools import last_message, qemu_version
from qdisk.vm import live, store
from qdisk.vm.errors import VmError, VmRefusedError
from qdisk.vm.journal import check_unlocked, vm_lock
from qdisk.vm.pending import Messages, apply_pending, check_pending
from qdisk.vm.snapshot_volumes import layer_files
from qdisk.vm.state import remove_run_files, running_pid, write_state
from qdisk.vm.volumes import images_named_for, linked_clones, owned_volumes, remove_images

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10.0
# How long QEMU may take to daemonize (TCG on a loaded host included).
START_TIMEOUT = 120.0
# After SIGKILL the kernel needs a moment to take a process down.
KILL_WAIT = 5.0
KVM_DEVICE = "/dev/kvm"


def kvm_usable() -> bool:
    """Whether this process can open ``/dev/kvm`` read/write (what QEMU's KVM needs)."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@dataclass(frozen=True)
class StartResult:
    pid: int
    syntax: Syntax
    accel: str | None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def start(settings: Settings, vmid: int, *, syntax: Syntax | None = None,
          accel: str | None = None, skiplock: bool = False) -> StartResult:
    """Start VM ``vmid`` (pending changes applied first, as qemu-server does) with the
    command ``showcmd`` prints, under ``accel``, else ``settings.accel``; returns once QEMU
    has daemonized. Refused while the config holds a ``lock:``, unless ``skiplock``."""
    with vm_lock(settings, vmid):
        config = store.load(settings, vmid)
        if read_options(config.current.values).template:  # qemu-server's vm_start, before its lock check
            raise VmRefusedError(f"VM {vmid}: you can't start a vm if it's a template")
        check_unlocked(config, skiplock=skiplock)
        pid = running_pid(settings, vmid)
        if pid is not None:
            raise VmRefusedError(f"VM {vmid} is already running (pid {pid})")
        check_pending(settings, config)
        remove_run_files(settings, vmid)
        messages = Messages()
        storage_config = storage.load(settings)
        if vmconfig.has_pending(config):
            messages = apply_pending(config, storage_config)
            store.save(settings, config)
        chosen_accel = accelerator(read_options(config.current.values), accel or settings.accel,
                                   kvm_usable=kvm_usable)
        command = build_command(config, storage_config, settings,
                                qemu_version=lambda: qemu_version(settings.tools.qemu_system),
                                syntax=syntax, accel=chosen_accel)
        messages.warnings += command.warnings
        pid = _run_daemon(settings, vmid, command.argv)
        try:
            write_state(settings, vmid, live.initial_state(command.syntax, command.graphs, pid))
        except BaseException:
            # Without its state a running VM could not take live changes: no half start.
            _kill_leftover(settings, vmid)
            raise
    return StartResult(pid, command.syntax, chosen_accel, tuple(messages.warnings),
                       tuple(messages.notes))


def _run_daemon(settings: Settings, vmid: int, argv: list[str]) -> int:
    """Run QEMU with ``-daemonize``: its parent exits once the VM is set up. Returns the pid."""
    log_file_path = settings.layout.run_files(vmid).log
    log.debug("starting VM %d: %s", vmid, " ".join(argv))
    # stderr to a file, not a pipe: the daemon inherits it, and a pipe would stay open.
    with fileio.truncated_output(log_file_path, home=settings.home) as log_file:
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=log_file, timeout=START_TIMEOUT)
        except FileNotFoundError:
            raise VmError(f"VM {vmid}: {argv[0]}: program not found (install it, or set "
                          f"QDISK_QEMU_SYSTEM)") from None
        except OSError as error:
            # E2BIG: one argument over Linux's 128 KiB (a -drive with a long backing chain).
            longest = max(len(argument) for argument in argv)
            raise VmError(f"VM {vmid}: QEMU cannot be started: {error.strerror} (the longest "
                          f"argument has {longest} characters; a long backing chain fits "
                          f"better in -blockdev syntax: vm start --syntax blockdev)") from None
        except subprocess.TimeoutExpired:
            _kill_leftover(settings, vmid)
            raise VmError(f"VM {vmid}: QEMU did not start within {START_TIMEOUT:g} s "
                          f"(log: {log_file_path})") from None
    if result.returncode != 0:
        _kill_leftover(settings, vmid)
        message = last_message(log_file_path.read_text(errors="replace"))
        raise VmError(f"VM {vmid}: QEMU failed to start: "
                      f"{message or f'exit code {result.returncode}'}")
    pid = running_pid(settings, vmid)
    if pid is None:
        raise VmError(f"VM {vmid}: QEMU exited right after starting (log: {log_file_path})")
    return pid


def _kill_leftover(settings: Settings, vmid: int) -> None:
    """A half-started QEMU must not linger: kill whatever the pid file names, if it is ours."""
    pid = running_pid(settings, vmid)
    if pid is not None:
        _kill(pid)
    remove_run_files(settings, vmid)


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return _wait_gone(pid, KILL_WAIT)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while processes.alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass(frozen=True)
class StopResult:
    pid: int
    killed: bool
    warnings: tuple[str, ...] = ()


def stop(settings: Settings, vmid: int, *, timeout: float = DEFAULT_STOP_TIMEOUT,
         skiplock: bool = False) -> StopResult:
    """Ask QEMU to quit over QMP; kill it if it is still there after ``timeout`` seconds.
    Refused while the config holds a ``lock:``, unless ``skiplock``."""
    with vm_lock(settings, vmid):
        check_unlocked(store.load(settings, vmid), skiplock=skiplock)
        pid = running_pid(settings, vmid)
        if pid is None:
            remove_run_files(settings, vmid)
            raise VmRefusedError(f"VM {vmid} is not running")
        warnings: list[str] = []
        # One deadline: a monitor that hangs does not double the time to the kill.
        deadline = time.monotonic() + timeout
        try:
            with QmpConnection(settings.layout.run_files(vmid).qmp,
                               timeout=max(timeout, 1.0)) as qmp:
                qmp.execute("quit")
        except QmpError as error:
            # QEMU may close the monitor before it answers "quit": the process decides.
            log.info("VM %d: quit over QMP: %r", vmid, error)
        killed = not _wait_gone(pid, max(0.0, deadline - time.monotonic()))
        if killed:
            warnings.append(f"VM {vmid}: QEMU did not quit within {timeout:g} s: killed")
            if not _kill(pid):
                raise VmError(f"VM {vmid}: QEMU (pid {pid}) survives SIGKILL")
        remove_run_files(settings, vmid)
    return StopResult(pid, killed, tuple(warnings))


def destroy(settings: Settings, vmid: int, *, skiplock: bool = False) -> list[Path]:
    """Remove a stopped VM: its config, run files, log, lock and its images, as qemu-server
    does: the VM's own volumes its config names (current, pending and snapshots), and every
    image named for the VM (``vm-<vmid>-disk-N``, ``base-<vmid>-disk-N``) on its storages,
    with their snapshot layers (internal snapshots go with their image).
    Refused while any process has one of them open, or while the config holds a
    ``lock:`` (unless ``skiplock``), or while a linked clone is based on one of its base
    images. Returns the removed images."""
    with vm_lock(settings, vmid):
        config = store.load(settings, vmid)
        check_unlocked(config, skiplock=skiplock)
        pid = running_pid(settings, vmid)
        if pid is not None:
            raise VmRefusedError(f"VM {vmid} is running (pid {pid}): stop it first")
        storage_config = storage.load(settings)
        images = set(images_named_for(storage_config, vmid))
        for volid in sorted(owned_volumes(config)):
            try:
                images.add(Path(storage.resolve(storage_config, volid).path))
            except InvalidInputError as error:
                log.warning("VM %d: %s: not removed: %s", vmid, volid, error)
        # Snapshot layers of volume chains (and qdisk's temporary files beside a volume)
        # go with their volume, as pve-storage's vdisk_free removes a chain.
        for directory in {path.parent for path in images}:
            images.update(layer_files(directory, [path.name for path in images
                                                  if path.parent == directory]))
        existing = sorted(path for path in images if path.exists())
        _refuse_bases_in_use(vmid, existing, settings)
        for path in existing:
            users = processes.holders(path)
            if users:
                raise VmRefusedError(
                    f"VM {vmid}: image '{path}' is open in "
                    + ", ".join(f"{user.command} (pid {user.pid})" for user in users)
                    + ": nothing removed")
        remove_images(existing)
        remove_run_files(settings, vmid)
        settings.layout.run_files(vmid).log.unlink(missing_ok=True)
        settings.layout.vm_config(vmid).unlink()
        settings.layout.vm_lock(vmid).unlink(missing_ok=True)
    return existing


def _refuse_bases_in_use(vmid: int, images: list[Path], settings: Settings) -> None:
    """pve-storage's vdisk_free: a base image a linked clone (of another VM, stopped or
    not) still reads is never removed."""
    for path in images:
        if path.name.startswith("base-"):
            clones = [clone for clone in linked_clones(path, settings.tools) if clone not in images]
            if clones:
                raise VmRefusedError(
                    f"VM {vmid}: base volume '{path.name}' is still in use by linked cloned "
                    + ", ".join(str(clone) for clone in clones) + ": nothing removed")

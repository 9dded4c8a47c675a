"""``qdisk pve hook VMID PHASE``: the entry point of a Proxmox VE hookscript.

qemu-server runs a VM's hookscript as ``<script> <vmid> <phase>`` at ``pre-start``,
``post-start``, ``pre-stop`` and ``post-stop``. Only ``post-start`` does something
here: QEMU runs with the nodes qemu-server built (QEMU's default caches), and the VM's
stored settings are applied to them. Only a failing ``pre-start`` aborts a start; a
failing ``post-start`` marks the start task failed although the VM runs, so the command
reports a failure on stderr and succeeds (:mod:`qdisk.cli.pve`).

On the target of a migration, ``post-start`` runs inside the start there, before the
incoming migration has finished: QEMU's run state is ``inmigrate`` and its block nodes
are not yet active. The hook cannot wait (the migration goes on only once the start has
returned), so it starts a detached child that waits, bounded, until the VM runs and
then applies the settings; its output goes to ``var/run/qdisk/<vmid>.log``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from qdisk.outcome import DriveOutcome
from qdisk.pve.apply import apply_stored, qmp_session
from qdisk.pve.host import PveHost, PveRefusedError
from qdisk.qemu.qmp import QmpError
from qdisk.system import fileio

PHASES = ("pre-start", "post-start", "pre-stop", "post-stop")
# How long the child waits for an incoming migration to finish, and how often it asks.
MIGRATION_WAIT = 3600.0
STATUS_INTERVAL = 1.0
# The child: the qdisk command line, from whatever Python runs qdisk now.
_CHILD_SOURCE = "import sys; from qdisk.cli import main; sys.exit(main())"
SNIPPET_NAME = "qdisk-hook.sh"


@dataclass(frozen=True)
class HookResult:
    """What a phase did: the settings' outcome per drive, or the child waiting for an
    incoming migration (its pid)."""

    outcomes: tuple[DriveOutcome, ...] = ()
    waiting_pid: int | None = None


def run_hook(host: PveHost, vmid: int, phase: str) -> HookResult:
    """Phase ``phase`` of VM ``vmid``; every phase but ``post-start`` does nothing."""
    if phase != "post-start" or not host.paths.cache_settings(vmid).exists():
        # A QEMU just started has QEMU's defaults: without settings there is nothing to do.
        return HookResult()
    if _run_state(host, vmid) == "inmigrate":
        return HookResult(waiting_pid=_spawn_migration_waiter(host, vmid))
    return HookResult(tuple(apply_stored(host, vmid)))


def wait_for_migration(host: PveHost, vmid: int, *,
                       timeout: float = MIGRATION_WAIT) -> list[DriveOutcome]:
    """Wait until VM ``vmid``'s incoming migration has finished and the VM runs, then
    apply its settings (the config may still carry the migration's lock then)."""
    deadline = time.monotonic() + timeout
    while (state := _run_state(host, vmid)) != "running":
        if time.monotonic() >= deadline:
            raise PveRefusedError(f"VM {vmid} did not run within {timeout:g} s after its "
                                  f"incoming migration (state {state}): settings not applied")
        time.sleep(STATUS_INTERVAL)
    return apply_stored(host, vmid, allowed_lock="migrate")


def _run_state(host: PveHost, vmid: int) -> str:
    if host.running_pid(vmid) is None:
        raise PveRefusedError(f"VM {vmid} is not running on this node ({host.node})")
    try:
        with qmp_session(host.layout.run_files(vmid).qmp) as qmp:
            return str(qmp.execute("query-status")["status"])
    except QmpError as error:
        raise PveRefusedError(f"VM {vmid}: {error}") from None


def _spawn_migration_waiter(host: PveHost, vmid: int) -> int:
    """Start ``qdisk pve hook --wait-for-migration VMID post-start`` detached: its own
    session, stdin from /dev/null, stdout and stderr to the VM's log. The hookscript's
    caller reads the hook's output until it closes, so the child must not hold it."""
    log_path = host.layout.run_files(vmid).log
    with fileio.truncated_output(log_path, home=host.paths.qdisk_run_dir) as log_file:
        argv = [sys.executable, "-c", _CHILD_SOURCE, "pve", "hook", "--wait-for-migration",
                str(vmid), "post-start"]
        return os.posix_spawn(sys.executable, argv, os.environ, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_file.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log_file.fileno(), 2)])


def snippet(qdisk_command: str) -> str:
    """The hookscript an administrator puts on a snippets storage. It calls qdisk at
    ``post-start`` only and always exits 0: a missing or failing qdisk never stops a VM."""
    quoted = "'" + qdisk_command.replace("'", "'\\''") + "'"
    return f"""#!/bin/sh
# qdisk's Proxmox VE hookscript: applies the qcow2 cache settings of /etc/pve/qdisk/<vmid>.conf
# (qdisk pve set) to the VM once it runs, also on the target of a migration.
# Install: save as {SNIPPET_NAME} on a storage with the 'snippets' content type, chmod +x,
# then: qm set <vmid> --hookscript <storage>:snippets/{SNIPPET_NAME}
# A VM has one hookscript: to keep your own, call the line below from it.
case "$2" in
    post-start) {quoted} pve hook "$1" "$2" || true ;;
esac
exit 0
"""

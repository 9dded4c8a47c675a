"""`qdisk pve hook VMID PHASE` as Proxmox VE calls a hookscript: post-start applies the
VM's settings (on a migration target once the VM runs there), nothing ever fails a start."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdisk.pve import apply
from qdisk.system.processes import alive

from cli_helpers import RunQdisk
from pve_helpers import GIB, MIB, NOISE, OTHER_NODE, PveTree, vm_size
from qemu_helpers import kill_and_wait

pytestmark = pytest.mark.qemu

# How long the background child may take to see the VM run and apply (polls each second).
APPLY_WAIT = 30.0


def test_post_start_without_settings_does_not_even_ask_qemu(tree: PveTree,
                                                           run_qdisk: RunQdisk) -> None:
    result = run_qdisk("pve", "hook", "100", "post-start")  # VM 100 does not run
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("phase", ["pre-start", "pre-stop", "post-stop", "some-future-phase"])
def test_other_phases_do_nothing(tree: PveTree, run_qdisk: RunQdisk, phase: str) -> None:
    # Even for a VM that does not run, whose settings could not be applied.
    tree.settings_path(100).parent.mkdir()
    tree.settings_path(100).write_text("scsi0: qcow2-l2-cache-size=64\n")
    result = run_qdisk("pve", "hook", "100", phase)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert not (tree.root / "var" / "run" / "qdisk").exists()


@pytest.mark.parametrize("vmid", ["100", "555", "not-a-vmid"])
def test_post_start_never_fails_the_start(tree: PveTree, run_qdisk: RunQdisk, vmid: str) -> None:
    # Settings that cannot be applied: VM 100 does not run, VM 555 does not exist.
    tree.settings_path(100).parent.mkdir()
    for number in (100, 555):
        tree.settings_path(number).write_text("scsi0: qcow2-l2-cache-size=64\n")
    result = run_qdisk("pve", "hook", vmid, "post-start")
    assert result.exit_code == 0
    assert result.stderr.startswith(f"warning: VM {vmid}: qcow2 cache settings not applied: ")


def test_the_snippet_calls_qdisk_at_post_start_only_and_always_succeeds(
        tree: PveTree, run_qdisk: RunQdisk, tmp_path: Path) -> None:
    snippet = run_qdisk("pve", "hook", "--print-snippet").stdout
    assert "qm set <vmid> --hookscript <storage>:snippets/qdisk-hook.sh" in snippet
    # Run as Proxmox VE runs it, with a qdisk that fails: every phase succeeds, and only
    # post-start calls it.
    calls = tmp_path / "calls"
    failing = tmp_path / "qdisk"
    failing.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 3\n")
    failing.chmod(0o755)
    script = tmp_path / "qdisk-hook.sh"
    script.write_text(re.sub(r"'[^']*qdisk'", f"'{failing}'", snippet))
    script.chmod(0o755)
    for phase in ("pre-start", "post-start", "pre-stop", "post-stop"):
        assert subprocess.run([str(script), "100", phase]).returncode == 0
    assert calls.read_text() == "pve hook 100 post-start\n"


@contextlib.contextmanager
def reaped(pid: int) -> Iterator[None]:
    """The background child: killed if it is still there at the end, and reaped."""
    try:
        yield
    finally:
        kill_and_wait(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_on_a_migration_target_the_settings_follow_once_the_vm_runs(
        tree: PveTree, run_qdisk: RunQdisk, tmp_path: Path) -> None:
    tree.settings_path(103).parent.mkdir()
    tree.settings_path(103).write_text("scsi0: qcow2-l2-cache-size=4096\n")
    source_run = tmp_path / "pve2-run"
    tree.start(103, node=OTHER_NODE, run_dir=source_run)
    channel = tmp_path / "migration.sock"
    target = tree.start(103, node=OTHER_NODE, extra=("-incoming", f"unix:{channel}"))
    before = vm_size(target)

    hooked = run_qdisk("pve", "hook", "103", "post-start")

    assert hooked.exit_code == 0, hooked.stderr
    match = re.search(r"in the background, pid (\d+)", hooked.stdout)
    assert match is not None, hooked.stdout
    child = int(match.group(1))
    with reaped(child):
        # The incoming migration still runs: nothing applied yet.
        assert alive(child) and not (tree.root / "var/run/qdisk/103.state.json").exists()
        migrate(tree, source_run, channel)
        with tree.qmp(103) as qmp:  # qemu-server resumes the VM on the target
            qmp.execute("cont")
        deadline = time.monotonic() + APPLY_WAIT
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        log = (tree.root / "var/run/qdisk/103.log").read_text()
        assert not alive(child), log
        assert "scsi0: " in log and "l2-cache-size 4 GiB applied live" in log
        grown = vm_size(target) - before
        assert 4 * GIB - 32 * MIB - NOISE < grown < 4 * GIB + NOISE


def migrate(tree: PveTree, source_run: Path, channel: Path) -> None:
    with tree.qmp(103, source_run) as qmp:
        qmp.execute("migrate", {"uri": f"unix:{channel}"})
        deadline = time.monotonic() + APPLY_WAIT
        while (status := qmp.execute("query-migrate").get("status")) != "completed":
            assert status not in ("failed", "cancelled") and time.monotonic() < deadline, status
            time.sleep(0.05)


def test_a_monitor_held_by_another_client_is_reported_as_busy(
        tree: PveTree, run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shorter waits than the hook's (10 s, 5 s per attempt); the outcome is the same.
    monkeypatch.setattr(apply, "QMP_BUSY_WAIT", 1.0)
    monkeypatch.setattr(apply, "QMP_TIMEOUT", 1.0)
    tree.start(100)
    tree.settings_path(100).parent.mkdir()
    tree.settings_path(100).write_text("scsi0: qcow2-l2-cache-size=64\n")
    # Another client (qemu-server's status poller) holds the monitor all along.
    with socket.socket(socket.AF_UNIX) as holder:
        holder.connect(str(tree.run_dir / "100.qmp"))
        assert b"QMP" in holder.recv(4096)
        result = run_qdisk("pve", "hook", "100", "post-start")
    assert result.exit_code == 0
    assert result.stderr.startswith(
        f"warning: VM 100: qcow2 cache settings not applied: VM 100: QEMU's monitor at "
        f"{tree.run_dir}/100.qmp is busy: no greeting within 1 s (another client, such as "
        "qemu-server, holds it, or QEMU hangs)"), result.stderr

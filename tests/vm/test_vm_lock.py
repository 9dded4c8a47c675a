"""A config's ``lock:`` line as ``qm`` honours it, and no lock file for a VM that does not
exist (issue 19, rows 4 and 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import RunQdisk

IMAGE = Path("storage/local/images/100/vm-100-disk-0.qcow2")


def _locked_vm(vm_home: Path, run_qdisk: RunQdisk, lock: str = "backup") -> Path:
    created = run_qdisk("vm", "create", "100", "--memory", "64",
                        "--scsi0", "local:0.01,format=qcow2")
    assert created.exit_code == 0, created.stderr
    config = vm_home / "qemu-server/100.conf"
    config.write_text(config.read_text() + f"lock: {lock}\n")
    return config


def test_set_start_stop_destroy_refuse_a_locked_vm_naming_the_lock(
        vm_home: Path, run_qdisk: RunQdisk) -> None:
    config = _locked_vm(vm_home, run_qdisk)
    before = config.read_text()
    for command in (("set", "100", "--memory", "128"), ("set", "100", "--delete", "lock"),
                    ("start", "100"), ("stop", "100"), ("destroy", "100")):
        refused = run_qdisk("vm", *command)
        assert refused.exit_code == 2, (command, refused)
        assert "VM 100 is locked (backup)" in refused.stderr, (command, refused.stderr)
        assert "Traceback" not in refused.stderr
    # Nothing changed, nothing removed (a backup reads these disks).
    assert config.read_text() == before
    assert (vm_home / IMAGE).exists()


def test_skiplock_overrides_the_lock(vm_home: Path, run_qdisk: RunQdisk) -> None:
    config = _locked_vm(vm_home, run_qdisk, "migrate")
    changed = run_qdisk("vm", "set", "100", "--skiplock", "--memory", "128")
    assert changed.exit_code == 0, changed.stderr
    assert "memory: 128" in config.read_text() and "lock: migrate" in config.read_text()
    destroyed = run_qdisk("vm", "destroy", "100", "--skiplock")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert not config.exists() and not (vm_home / IMAGE).exists()


def test_unlock_by_deleting_the_lock_with_skiplock(vm_home: Path, run_qdisk: RunQdisk) -> None:
    config = _locked_vm(vm_home, run_qdisk, "snapshot")
    unlocked = run_qdisk("vm", "set", "100", "--skiplock", "--delete", "lock")
    assert unlocked.exit_code == 0, unlocked.stderr
    assert "lock:" not in config.read_text()
    assert run_qdisk("vm", "set", "100", "--memory", "96").exit_code == 0


@pytest.mark.qemu
def test_start_and_stop_with_skiplock(vm_home: Path, run_qdisk: RunQdisk) -> None:
    _locked_vm(vm_home, run_qdisk)
    started = run_qdisk("vm", "start", "100", "--skiplock")
    assert started.exit_code == 0, started.stderr
    assert "running" in run_qdisk("vm", "status", "100").stdout
    assert run_qdisk("vm", "stop", "100").exit_code == 2
    stopped = run_qdisk("vm", "stop", "100", "--skiplock")
    assert stopped.exit_code == 0, stopped.stderr


def test_commands_on_a_vm_that_does_not_exist_leave_no_lock_file(
        vm_home: Path, run_qdisk: RunQdisk) -> None:
    for command in (("rollback", "999", "snap"), ("snapshot", "999", "snap"),
                    ("delsnapshot", "999", "snap"), ("listsnapshot", "999"),
                    ("set", "999", "--memory", "128"), ("start", "999"), ("stop", "999"),
                    ("destroy", "999"), ("status", "999")):
        refused = run_qdisk("vm", *command)
        assert refused.exit_code == 2, (command, refused)
        assert "VM 999: configuration file" in refused.stderr and "does not exist" in \
            refused.stderr, (command, refused.stderr)
        assert not (vm_home / "lock/999.lock").exists(), command
    # A new VM still gets its lock (and its config).
    assert run_qdisk("vm", "create", "999", "--memory", "64").exit_code == 0
    assert (vm_home / "qemu-server/999.conf").exists()


def test_start_refuses_a_template_as_qm(vm_home: Path, run_qdisk: RunQdisk) -> None:
    """qemu-server's vm_start refuses a template before anything else, even with skiplock."""
    _locked_vm(vm_home, run_qdisk)
    config = vm_home / "qemu-server/100.conf"
    config.write_text(config.read_text() + "template: 1\n")
    for extra in ((), ("--skiplock",)):
        refused = run_qdisk("vm", "start", "100", *extra)
        assert refused.exit_code == 2, refused
        assert "VM 100: you can't start a vm if it's a template" in refused.stderr
    assert not (vm_home / "run/100.pid").exists()

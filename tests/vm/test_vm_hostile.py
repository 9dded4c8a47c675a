"""Hostile situations around a VM's life: other spellings of QDISK_HOME, lost pid files,
another process holding a disk, hand-edited [PENDING] values, run files in the way,
failed and killed allocations, strays on the storage. No disk may be lost."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from qdisk.config.vmconfig import parse_vm_config

from cli_helpers import QDISK, RunQdisk
from qemu_helpers import qemu_img

IMAGES = Path("storage/local/images")


def _create_with_disk(run_qdisk: RunQdisk, vmid: str = "100", *extra: str) -> None:
    created = run_qdisk("vm", "create", vmid, "--memory", "64",
                        "--scsi0", "local:0.01,format=qcow2", *extra)
    assert created.exit_code == 0, created.stderr


@pytest.mark.qemu
def test_a_running_vm_is_found_through_any_spelling_of_its_home(
        vm_home: Path, run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch) -> None:
    _create_with_disk(run_qdisk, "600")
    assert run_qdisk("vm", "start", "600").exit_code == 0
    image = vm_home / IMAGES / "600/vm-600-disk-0.qcow2"
    link = vm_home.parent / "home-link"
    link.symlink_to(vm_home)
    monkeypatch.chdir(vm_home.parent)
    for spelling in (str(link), f"{vm_home}/", vm_home.name, f"./{link.name}/"):
        monkeypatch.setenv("QDISK_HOME", spelling)
        status = run_qdisk("vm", "status", "600")
        assert status.exit_code == 0 and "running" in status.stdout, (spelling, status)
        destroyed = run_qdisk("vm", "destroy", "600")
        assert destroyed.exit_code == 2 and "running" in destroyed.stderr, spelling
        assert image.exists() and (vm_home / "run/600.qmp").exists(), spelling

    # Without its pid file the VM is still found (by its QMP socket), and nothing of it goes.
    (vm_home / "run/600.pid").unlink()
    assert "running" in run_qdisk("vm", "status", "600").stdout
    assert run_qdisk("vm", "destroy", "600").exit_code == 2
    assert image.exists() and (vm_home / "run/600.qmp").exists()
    monkeypatch.setenv("QDISK_HOME", str(link))
    stopped = run_qdisk("vm", "stop", "600")
    assert stopped.exit_code == 0, stopped.stderr


@pytest.mark.qemu
def test_destroy_refuses_while_another_process_has_the_image_open(
        vm_home: Path, run_qdisk: RunQdisk) -> None:
    _create_with_disk(run_qdisk)
    image = vm_home / IMAGES / "100/vm-100-disk-0.qcow2"
    daemon = subprocess.Popen(
        ["qemu-storage-daemon", "--blockdev",
         f"driver=file,node-name=f,filename={image}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while str(image) not in {os.readlink(f"/proc/{daemon.pid}/fd/{fd}")
                                 for fd in os.listdir(f"/proc/{daemon.pid}/fd")}:
            assert daemon.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        refused = run_qdisk("vm", "destroy", "100")
        assert refused.exit_code == 2
        assert str(image) in refused.stderr and f"pid {daemon.pid}" in refused.stderr
        assert image.exists() and (vm_home / "qemu-server/100.conf").exists()
    finally:
        daemon.kill()
        daemon.wait()
    assert run_qdisk("vm", "destroy", "100").exit_code == 0
    assert not image.exists()


@pytest.mark.qemu
def test_destroy_removes_every_image_named_for_the_vm(vm_home: Path, run_qdisk: RunQdisk) -> None:
    _create_with_disk(run_qdisk)
    _create_with_disk(run_qdisk, "101")
    stray = vm_home / IMAGES / "100/vm-100-disk-7.qcow2"
    qemu_img("create", "-f", "qcow2", str(stray), "1M")
    foreign = vm_home / IMAGES / "100/notes.txt"
    foreign.write_text("not an image of the VM")
    # A volume only a snapshot still names is the VM's too.
    snapshot_disk = vm_home / IMAGES / "100/vm-100-disk-3.raw"
    qemu_img("create", "-f", "raw", str(snapshot_disk), "1M")
    config = vm_home / "qemu-server/100.conf"
    config.write_text(config.read_text() + "\n[before]\nscsi1: local:100/vm-100-disk-3.raw\n")

    destroyed = run_qdisk("vm", "destroy", "100")

    assert destroyed.exit_code == 0, destroyed.stderr
    assert not stray.exists() and not snapshot_disk.exists()
    assert not (vm_home / IMAGES / "100/vm-100-disk-0.qcow2").exists()
    assert foreign.exists()
    assert (vm_home / IMAGES / "101/vm-101-disk-0.qcow2").exists()



@pytest.mark.qemu
def test_destroy_keeps_a_base_image_a_linked_clone_reads(vm_home: Path, run_qdisk: RunQdisk) -> None:
    """pve-storage's vdisk_free: a template's base image stays while a linked clone (here
    a stopped VM) has it as backing file; once the clone is gone it goes."""
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    base = vm_home / IMAGES / "100/base-100-disk-0.qcow2"
    base.parent.mkdir(parents=True)
    qemu_img("create", "-f", "qcow2", str(base), "1M")
    config = vm_home / "qemu-server/100.conf"
    config.write_text(config.read_text() + "scsi0: local:100/base-100-disk-0.qcow2\ntemplate: 1\n")
    clone = vm_home / IMAGES / "101/vm-101-disk-0.qcow2"
    clone.parent.mkdir()
    qemu_img("create", "-f", "qcow2", "-b", "../100/base-100-disk-0.qcow2", "-F", "qcow2",
             str(clone))
    assert run_qdisk("vm", "create", "101", "--memory", "64",
                     "--scsi0", "local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2").exit_code == 0

    refused = run_qdisk("vm", "destroy", "100")

    assert refused.exit_code == 2, refused
    assert "base volume 'base-100-disk-0.qcow2' is still in use by linked cloned" in refused.stderr
    assert str(clone) in refused.stderr and base.exists() and config.exists()
    assert run_qdisk("vm", "destroy", "101").exit_code == 0
    assert run_qdisk("vm", "destroy", "100").exit_code == 0
    assert not base.exists()

def test_invalid_pending_values_are_refused_and_nothing_changes(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    config_file.write_text(config_file.read_text() + "\n[PENDING]\nmemory: lots\nname: fine\n")
    before = config_file.read_bytes()

    for command in (("vm", "set", "100", "--name", "ok"), ("vm", "start", "100")):
        refused = run_qdisk(*command)
        assert refused.exit_code == 2, command
        assert "memory" in refused.stderr and str(config_file) in refused.stderr, refused.stderr
        assert config_file.read_bytes() == before, command

    # A change that replaces the bad value is what fixes it.
    assert run_qdisk("vm", "set", "100", "--memory", "128").exit_code == 0
    config = parse_vm_config(config_file.read_text(), 100)
    assert config.current.values["memory"] == "128" and config.current.values["name"] == "fine"


@pytest.mark.qemu
def test_a_broken_pending_drive_never_turns_a_disk_into_unused(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path) -> None:
    _create_with_disk(run_qdisk)
    config_file.write_text(config_file.read_text()
                           + "\n[PENDING]\nscsi0: local:100/vm-100-disk-0.qcow2,bogus=1\n")
    before = config_file.read_bytes()

    refused = run_qdisk("vm", "set", "100", "--name", "ok")

    assert refused.exit_code == 2 and "scsi0" in refused.stderr and "bogus" in refused.stderr
    assert config_file.read_bytes() == before
    assert "unused" not in config_file.read_text()


@pytest.mark.qemu
def test_a_forced_pending_deletion_says_it_removed_the_image(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path) -> None:
    _create_with_disk(run_qdisk)
    image = vm_home / IMAGES / "100/vm-100-disk-0.qcow2"
    config_file.write_text(config_file.read_text() + "\n[PENDING]\ndelete: !scsi0\n")

    result = run_qdisk("vm", "set", "100", "--name", "ok")

    assert result.exit_code == 0, result.stderr
    assert "scsi0: removed volume local:100/vm-100-disk-0.qcow2" in result.stdout
    assert str(image) in result.stdout and not image.exists()


def test_a_directory_in_place_of_a_run_file_is_refused(vm_home: Path, run_qdisk: RunQdisk) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    socket = vm_home / "run/100.qmp"
    socket.mkdir(parents=True)

    for command in (("vm", "start", "100"), ("vm", "stop", "100"), ("vm", "status", "100")):
        refused = run_qdisk(*command)
        assert refused.exit_code == 2, (command, refused)
        assert str(socket) in refused.stderr and "directory" in refused.stderr, refused.stderr
    assert socket.is_dir()


@pytest.mark.qemu
def test_a_failed_allocation_leaves_nothing(vm_home: Path, run_qdisk: RunQdisk) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0

    failed = run_qdisk("vm", "set", "100", "--scsi0", "local:4194304,format=qcow2")  # 4 PiB: too big for qcow2

    assert failed.exit_code == 1 and "scsi0: no new image" in failed.stderr
    assert not list((vm_home / IMAGES).rglob("*.qcow2"))
    _set = run_qdisk("vm", "set", "100", "--scsi0", "local:0.01,format=qcow2")
    assert _set.exit_code == 0, _set.stderr
    assert (vm_home / IMAGES / "100/vm-100-disk-0.qcow2").exists()


@pytest.mark.qemu
def test_a_qcow2_path_passed_as_raw_is_pointed_out(vm_home: Path, run_qdisk: RunQdisk,
                                                   tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", str(image), "1M")
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0

    result = run_qdisk("vm", "set", "100", "--scsi0",
                       f"{image},qcow2-l2-cache-entry-size=2097152")

    assert result.exit_code == 0
    assert "scsi0" in result.stderr and "passed to QEMU as raw" in result.stderr
    assert "format=qcow2" in result.stderr
    clean = run_qdisk("vm", "set", "100", "--scsi1", f"{image},format=qcow2")
    assert "as raw" not in clean.stderr


def _images_and_named(home: Path, config_file: Path) -> tuple[set[str], set[str]]:
    on_disk = {path.name for path in (home / IMAGES / "100").glob("*")} \
        if (home / IMAGES / "100").is_dir() else set()
    config = parse_vm_config(config_file.read_text(), 100)
    assert not config.warnings
    named = {match for section in (config.current, config.pending)
             for value in section.values.values()
             for match in re.findall(r"vm-100-disk-\d+\.qcow2", value)}
    return on_disk, named


@pytest.mark.qemu
def test_sets_killed_during_allocation_leave_no_orphan(vm_home: Path, run_qdisk: RunQdisk,
                                                      config_file: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    rng = random.Random(9)
    began = time.perf_counter()
    subprocess.run([QDISK, "vm", "set", "100", "--scsi0", "local:0.01,format=qcow2"], check=True)
    window = time.perf_counter() - began
    kills_mid_allocation = 0
    journal = vm_home / "lock/100.alloc"
    for iteration in range(50):
        key = f"scsi{1 + iteration % 20}"
        # Its own process group: the kill takes qemu-img with it, as a killed shell job.
        child = subprocess.Popen([QDISK, "vm", "set", "100", f"--{key}", "local:0.01,format=qcow2"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        if iteration % 2:
            time.sleep(rng.uniform(0, window))
        else:
            # Half the kills aimed at the allocation itself: as soon as it is journaled.
            deadline = time.monotonic() + 30
            while not journal.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.02))
        with contextlib.suppress(ProcessLookupError):  # the set may have ended already
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        kills_mid_allocation += journal.exists()
        # The next command on the VM removes what the killed one left.
        assert run_qdisk("vm", "set", "100", "--description", f"after kill {iteration}").exit_code == 0
        on_disk, named = _images_and_named(vm_home, config_file)
        assert on_disk == named, f"iteration {iteration}: orphans {on_disk - named}"
        assert not list(vm_home.rglob("*.tmp")), iteration
        assert not journal.exists()
        if iteration % 5 == 4:
            assert run_qdisk("vm", "set", "100", "--delete", key).exit_code == 0
    assert kills_mid_allocation, "no kill landed during an allocation"

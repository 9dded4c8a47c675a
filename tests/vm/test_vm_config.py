"""VM configs without running QEMU: the default store, allocation, validation (nothing
written on any error), pending changes and their views, unused disks, destroy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdisk.config.drive import Drive
from qdisk.errors import QdiskError
from qdisk.qemu.qmp import QmpCommandError, QmpError
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.vm import changes, live

from cli_helpers import RunQdisk
from qemu_helpers import qemu_img

VOLUME_DIR = Path("storage/local/images/100")


def test_fresh_home_gets_the_local_storage(vm_home: Path, run_qdisk: RunQdisk) -> None:
    result = run_qdisk("storage", "path", "local:100/vm-100-disk-0.qcow2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(vm_home / VOLUME_DIR / "vm-100-disk-0.qcow2")
    assert (vm_home / "storage.cfg").read_text() == (
        f"dir: local\n\tpath {vm_home}/storage/local\n\tcontent images,iso\n")
    assert run_qdisk("storage", "path", "nowhere:100/x.raw").exit_code == 2


@pytest.mark.qemu
def test_allocation_creates_images_named_as_qemu_server(vm_home: Path, run_qdisk: RunQdisk,
                                                        config_file: Path) -> None:
    result = run_qdisk("vm", "create", "100", "--memory", "64",
                       "--scsi0", "local:0.1,format=qcow2,qcow2-l2-cache-size=2",
                       "--virtio1=local:0.01")
    assert result.exit_code == 0, result.stderr
    assert config_file.read_text() == (
        "memory: 64\n"
        "scsi0: local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=2,size=104858K\n"
        "virtio1: local:100/vm-100-disk-1.raw,size=10486K\n")
    info = json.loads(qemu_img("info", "--output=json",
                               str(vm_home / VOLUME_DIR / "vm-100-disk-0.qcow2")))
    assert (info["format"], info["virtual-size"]) == ("qcow2", 104858 * 1024)
    raw = json.loads(qemu_img("info", "--output=json",
                              str(vm_home / VOLUME_DIR / "vm-100-disk-1.raw")))
    assert raw["format"] == "raw"
    # The next disk takes the first free number.
    assert run_qdisk("vm", "set", "100", "--sata0", "local:0.01,format=qcow2").exit_code == 0
    assert "sata0: local:100/vm-100-disk-2.qcow2,size=10486K" in config_file.read_text()


def test_create_refuses_an_existing_vm(vm_home: Path, run_qdisk: RunQdisk,
                                       config_file: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    result = run_qdisk("vm", "create", "100", "--memory", "128")
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert config_file.read_text() == "memory: 64\n"


@pytest.mark.parametrize("arguments, messages", [
    (["--memory", "8"], ["memory: value must have a minimum value of 16"]),
    (["--foo", "1"], ["unknown option 'foo'"]),
    (["--name", "no_underscores"], ["name: value does not match the regex pattern"]),
    (["--machine", "pc-i440fx-x"], ["machine: value does not match the regex pattern"]),
    (["--scsihw", "virtio"], ["scsihw: value 'virtio' does not have a value in the enumeration"]),
    (["--boot", "order=scsi0;floppy"], ["boot.order: value does not match the regex pattern"]),
    (["--bootdisk", "unused0"], ["bootdisk: invalid format - invalid drive name 'unused0'"]),
    (["--kvm", "maybe"], ["kvm: type check ('boolean') failed - got 'maybe'"]),
    (["--cores", "0", "--scsi1", "local:100/x.qcow2,cache=fast,size=1X"],
     ["cores: value must have a minimum value of 1", "scsi1.cache: value 'fast'",
      "scsi1.size: invalid format"]),
    (["--scsi1", "nowhere:100/vm-100-disk-5.qcow2"], ["storage 'nowhere' does not exist"]),
    (["--scsi1", "local:100/vm-100-disk-0.qcow2,format=raw"],
     ["'format=raw' option different from storage format 'qcow2'"]),
    # The image-dependent rule: the entry size is above the image's 64 KiB clusters.
    (["--scsi0", "local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-entry-size=131072"],
     ["scsi0.qcow2-l2-cache-entry-size: value 131072 must be a power of two between 512 and "
      "the cluster size"]),
    (["--memory", "128", "--delete", "memory"], ["memory: cannot set and delete"]),
    (["--delete", "bar"], ["unknown option 'bar'"]),
    (["--scsi1", "local:0,format=qcow2"],
     ["scsi1.file: 'local:0': the size of a new disk must be more than 0 GiB"]),
])
@pytest.mark.qemu
def test_invalid_values_are_refused_and_nothing_is_written(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path, arguments: list[str],
        messages: list[str]) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64",
                     "--scsi0", "local:0.01,format=qcow2").exit_code == 0
    before = config_file.read_bytes()
    images = sorted((vm_home / VOLUME_DIR).iterdir())

    result = run_qdisk("vm", "set", "100", *arguments)

    assert result.exit_code == 2
    for message in messages:
        assert message in result.stderr
    assert config_file.read_bytes() == before
    assert sorted((vm_home / VOLUME_DIR).iterdir()) == images


@pytest.mark.qemu
def test_an_image_allocated_for_a_refused_command_is_removed(vm_home: Path,
                                                             run_qdisk: RunQdisk,
                                                             config_file: Path) -> None:
    result = run_qdisk("vm", "create", "100", "--scsi0",
                       "local:0.01,format=qcow2,qcow2-l2-cache-entry-size=131072")
    assert result.exit_code == 2
    assert "vm-100-disk-0.qcow2 (65536): QEMU refuses it" in result.stderr
    assert not config_file.exists()
    assert not (vm_home / VOLUME_DIR).exists()


PENDING_CONFIG = """\
#first line
memory: 512
name: web
scsi0: local:100/vm-100-disk-0.qcow2,size=1G
tags: a;b

[PENDING]
delete: tags,!scsi0
memory: 1024
name: web2
"""


def test_config_and_pending_views(vm_home: Path, run_qdisk: RunQdisk, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(PENDING_CONFIG)

    merged = run_qdisk("vm", "config", "100", "--json")
    assert json.loads(merged.stdout) == {"description": "first line", "memory": "1024",
                                         "name": "web2"}
    current = run_qdisk("vm", "config", "100", "--current")
    assert current.stdout == ("description: first line\nmemory: 512\nname: web\n"
                              "scsi0: local:100/vm-100-disk-0.qcow2,size=1G\ntags: a;b\n")
    pending = run_qdisk("vm", "pending", "100", "--json")
    assert json.loads(pending.stdout) == [
        {"key": "description", "value": "first line", "delete": 0},
        {"key": "memory", "value": "512", "pending": "1024", "delete": 0},
        {"key": "name", "value": "web", "pending": "web2", "delete": 0},
        {"key": "scsi0", "value": "local:100/vm-100-disk-0.qcow2,size=1G", "delete": 2},
        {"key": "tags", "value": "a;b", "delete": 1},
    ]
    human = run_qdisk("vm", "pending", "100")
    assert human.stdout == (
        "cur description: first line\n"
        "cur memory: 512\nnew memory: 1024\n"
        "cur name: web\nnew name: web2\n"
        "del scsi0: local:100/vm-100-disk-0.qcow2,size=1G\n"
        "del tags: a;b\n")
    assert run_qdisk("vm", "config", "999").exit_code == 2


def test_set_on_a_stopped_vm_applies_at_once(vm_home: Path, run_qdisk: RunQdisk,
                                             config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(PENDING_CONFIG)
    result = run_qdisk("vm", "set", "100", "--onboot", "yes", "--tags", "x, y",
                       "--description", "one, two", "--boot", "order=scsi0;net0")
    assert result.exit_code == 0, result.stderr
    # Older pending changes land too, the forced deletion included.
    assert config_file.read_text() == ("#one, two\nboot: order=scsi0;net0\nmemory: 1024\n"
                                       "name: web2\nonboot: 1\ntags: x;y\n")


@pytest.mark.qemu
def test_replaced_and_deleted_disks_become_unused_and_destroy_removes_them(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path) -> None:
    images = vm_home / VOLUME_DIR
    assert run_qdisk("vm", "create", "100", "--scsi0", "local:0.01,format=qcow2",
                     "--scsi1", "local:0.01").exit_code == 0
    assert run_qdisk("vm", "set", "100", "--scsi0", "local:0.01,format=qcow2",
                     "--delete", "scsi1").exit_code == 0
    text = config_file.read_text()
    assert "scsi0: local:100/vm-100-disk-2.qcow2" in text
    # Deletions first, then the new values (qemu-server's vmconfig_apply_pending).
    assert "unused0: local:100/vm-100-disk-1.raw" in text
    assert "unused1: local:100/vm-100-disk-0.qcow2" in text
    # Deleting an unused disk frees its volume at once, as qemu-server does.
    assert run_qdisk("vm", "set", "100", "--delete", "unused0").exit_code == 0
    assert sorted(path.name for path in images.iterdir()) == ["vm-100-disk-0.qcow2",
                                                              "vm-100-disk-2.qcow2"]
    foreign = vm_home / "foreign.raw"
    qemu_img("create", "-q", "-f", "raw", str(foreign), "1M")
    assert run_qdisk("vm", "set", "100", "--virtio0", str(foreign)).exit_code == 0

    result = run_qdisk("vm", "destroy", "100")

    assert result.exit_code == 0, result.stderr
    assert not images.exists()
    assert foreign.exists()  # not the VM's own disk
    assert not config_file.exists()
    assert run_qdisk("vm", "list").stdout.splitlines()[1:] == []


@pytest.mark.qemu
def test_live_changes_that_do_not_reach_qemu_stay_pending(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_qdisk("vm", "create", "100", "--name", "one", "--scsi0", "local:0.01,format=qcow2",
                     "--scsi1", "local:0.01,format=qcow2").exit_code == 0
    applied = config_file.read_text()
    errors: dict[str, QdiskError] = {
        "scsi0": QmpCommandError("blockdev-reopen", "Could not reopen qcow2 layer: boom"),
        "scsi1": QmpError("QEMU's monitor at /x.qmp failed during blockdev-reopen: EOFError")}

    def apply_drive_change(settings: Settings, vmid: int, old: Drive, new: Drive,
                           storage_config: StorageConfig) -> live.LiveResult:
        if new.key in errors:
            raise errors[new.key]
        return live.LiveResult(live.LiveOutcome.LIVE, (f"{new.key}: applied live",))

    # A running VM whose QEMU refuses one disk's change and loses its monitor on the other.
    monkeypatch.setattr(changes, "running_pid", lambda settings, vmid: 4242)
    monkeypatch.setattr(live, "apply_drive_change", apply_drive_change)
    disks = {key: f"local:100/vm-100-disk-{key[-1]}.qcow2,qcow2-l2-cache-size=2,size=10486K"
             for key in errors}

    result = run_qdisk("vm", "set", "100", "--name", "two", "--scsi0", disks["scsi0"],
                       "--scsi1", disks["scsi1"])

    # One change QEMU could not be asked about makes it a failure (exit 1); the error lists
    # both drives, each with QEMU's message or why.
    assert result.exit_code == 1
    assert "VM 100: not applied to the running VM, the change stays pending:\n" \
        "  scsi0: Could not reopen qcow2 layer: boom\n  scsi1: QEMU's monitor at /x.qmp failed" \
        in result.stderr
    # The fast-plug key went through; both disks wait for the next start, as the file says.
    current = json.loads(run_qdisk("vm", "config", "100", "--current", "--json").stdout)
    assert current["name"] == "two"
    assert {key: current[key] for key in disks} == {
        key: line.split(": ", 1)[1] for line in applied.splitlines()
        for key in disks if line.startswith(f"{key}:")}
    pending = json.loads(run_qdisk("vm", "pending", "100", "--json").stdout)
    assert {item["key"]: item.get("pending") for item in pending if "pending" in item} == disks

    # The monitor is back: the next set retries what is pending. Only a refusal is left:
    # the user's request is what QEMU did not take (exit 2).
    del errors["scsi1"]
    refused = run_qdisk("vm", "set", "100", "--scsi0", disks["scsi0"].replace("=2", "=3"))
    assert refused.exit_code == 2
    assert "scsi1: applied live" in refused.stdout
    assert "VM 100: QEMU refused, the change stays pending:\n  scsi0: Could not reopen" \
        in refused.stderr
    current = json.loads(run_qdisk("vm", "config", "100", "--current", "--json").stdout)
    assert current["scsi1"] == disks["scsi1"]
    assert "scsi0: local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=3," in \
        config_file.read_text().split("[PENDING]")[1]


def test_an_empty_boot_is_accepted_as_qemu_server_accepts_it(vm_home: Path,
                                                             run_qdisk: RunQdisk) -> None:
    created = run_qdisk("vm", "create", "100", "--scsi0", "local:0.01", "--boot", "")
    assert created.exit_code == 0, created.stderr
    assert "boot: \n" in (vm_home / "qemu-server/100.conf").read_text()
    shown = run_qdisk("vm", "showcmd", "100")
    assert shown.exit_code == 0, shown.stderr
    assert "scsi0" in shown.stdout and "bootindex" not in shown.stdout

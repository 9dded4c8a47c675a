"""The pieces of command generation: shell quoting, VM configs, the graph API (storage.cfg:
tests/storage)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qdisk import storage
from qdisk.config.drive import parse_drive
from qdisk.config.vmconfig import VmConfigError, parse_vm_config, pending_delete_flags, print_vm_config
from qdisk.qemu.blockdev import drive_blockdev, reopen_options
from qdisk.qemu.command import CommandError, format_command, parse_version, shell_quote
from qdisk.qemu.nodes import format_node, resolve_disk
from qdisk.settings import Settings, Tools
from qdisk.vm.store import load

from cmdline_helpers import VMID, QemuHome, walk

# The QEMU tools on PATH.
TOOLS = Tools()


@pytest.mark.parametrize(("argument", "quoted"), [
    ("-m", "-m"),
    ("2048", "2048"),
    ("/var/lib/vz/x.qcow2", "/var/lib/vz/x.qcow2"),
    ("kvm64,+sep,enforce", "kvm64,+sep,enforce"),
    ("type=pc", "'type=pc'"),
    ("a b", "'a b'"),
    ("", "''"),
    ("it's", "'it'\\''s'"),
    ("'start", "\\''start'"),
    ("end'", "'end'\\'"),
    ("a''b", "'a'\"''\"'b'"),
    ("x\ny", "'x\ny'"),
    ('{"a":1}', "'{\"a\":1}'"),
])
def test_shell_quote_as_string_shellquote(argument: str, quoted: str) -> None:
    assert shell_quote(argument) == quoted


def test_pretty_puts_each_option_with_its_values_on_a_line() -> None:
    argv = ["qemu", "-m", "512", "-nodefaults", "-drive", "file=/a -b,if=none"]
    assert format_command(argv) == "qemu -m 512 -nodefaults -drive 'file=/a -b,if=none'"
    # A value containing " -" stays on its option's line (qm's regex would split it).
    assert format_command(argv, pretty=True) == (
        "qemu \\\n  -m 512 \\\n  -nodefaults \\\n  -drive 'file=/a -b,if=none'")


def test_pretty_breaks_where_qm_does_on_the_quoted_text() -> None:
    # qm breaks at " -" of the quoted line: a value quoted as '-x y' starts with a quote.
    argv = ["qemu", "-name", "-x y", "-m", "512"]
    assert format_command(argv, pretty=True) == "qemu \\\n  -name '-x y' \\\n  -m 512"


@pytest.mark.parametrize(("path", "driver"), [("/dev/sr0", "host_cdrom"),
                                              ("/dev/cdrom", "host_cdrom"),
                                              ("/dev/sda", "host_device"),
                                              ("/srv/x.iso", "file")])
def test_file_driver_of_a_cdrom_path(path: str, driver: str) -> None:
    drive = parse_drive("ide2", f"{path},media=cdrom").drive
    node = format_node(resolve_disk(drive, storage.StorageConfig()), tools=TOOLS)
    assert node["file"]["driver"] == driver and node["driver"] == "raw"


@pytest.mark.parametrize(("text", "version"), [("10.0", (10, 0)), ("7.2.22", (7, 2, 22))])
def test_parse_version(text: str, version: tuple[int, ...]) -> None:
    assert parse_version(text) == version


def test_parse_version_refuses_garbage() -> None:
    with pytest.raises(CommandError, match="invalid QEMU version 'ten'"):
        parse_version("ten")


VM_CONFIG = """\
#My VM%3A the description
#second line
boot: order=scsi0
cores: 2
scsi0: local:100/vm-100-disk-0.qcow2,cache=none, size=32G
unknownkey: kept as written

[PENDING]
cores: 4
delete: !serial0,cpu

[special:cloudinit]
ipconfig0: ip=dhcp

[snap1]
#snapshot description
cores: 1
snaptime: 1700000000
"""


def test_vm_config_round_trips_as_pve_writes_it() -> None:
    config = parse_vm_config(VM_CONFIG, 100)
    assert config.current.description == "My VM: the description\nsecond line"
    assert config.current.values["scsi0"] == "local:100/vm-100-disk-0.qcow2,cache=none, size=32G"
    assert config.current.values["unknownkey"] == "kept as written"
    assert pending_delete_flags(config) == {"serial0": True, "cpu": False}
    assert config.merged()["cores"] == "4"
    assert config.snapshots["snap1"].description == "snapshot description"
    assert config.special["cloudinit"].values == {"ipconfig0": "ip=dhcp"}
    assert print_vm_config(config) == VM_CONFIG
    assert not config.warnings


def test_vm_config_reads_like_qemu_server() -> None:
    config = parse_vm_config("memory: 512\ncdrom: none,media=cdrom\nnot a line\n"
                             "delete: memory\ndescription: from%20key\n", 100)
    assert config.current.values == {"memory": "512", "ide2": "none,media=cdrom"}
    assert config.current.description == "from key"
    assert config.warnings == ["vm 100 - unable to parse config: not a line",
                               "vm 100 - property 'delete' is only allowed in [PENDING]"]
    assert print_vm_config(config) == "#from key\nide2: none,media=cdrom\nmemory: 512\n"


def test_vm_config_load_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VmConfigError, match="VM 100: configuration file .*100.conf' does not exist"):
        load(Settings(home=tmp_path, tools=Tools()), 100)
    with pytest.raises(VmConfigError, match="invalid VM id 5"):
        load(Settings(home=tmp_path, tools=Tools()), 5)


@pytest.mark.qemu
def test_reopen_options_are_the_format_nodes_options_with_children_by_name(
        qemu_home: QemuHome) -> None:
    qemu_home.create_image("local/images/8006/base.qcow2", "1G")
    qemu_home.create_image("local/images/8006/vm-8006-disk-0.qcow2", "2G", "-b", "base.qcow2",
                           "-F", "qcow2")
    drive = parse_drive("scsi0", "local:8006/vm-8006-disk-0.qcow2,discard=on,"
                                 "qcow2-cache-size-based-on-disk=1").drive
    node = format_node(resolve_disk(drive, storage.load(qemu_home.settings)), tools=TOOLS)
    options = reopen_options(node)
    assert options["file"] == node["file"]["node-name"]
    assert options["backing"] == node["backing"]["node-name"]
    assert {key: value for key, value in options.items() if key not in ("file", "backing")} == \
        {key: value for key, value in node.items() if key not in ("file", "backing")}
    assert options["detect-zeroes"] == "unmap" and options["cache"]["direct"] is True
    backing = reopen_options(node["backing"])
    # 1G base: L2 2 clusters (the minimum), refcount 4 clusters (the minimum), 64 KiB each.
    assert backing["read-only"] is True and backing["cache-size"] == 6 * 65536
    assert [n["driver"] for n in walk(node)] == ["qcow2", "file", "qcow2", "file"]


@pytest.mark.qemu
def test_drive_blockdev_for_the_storage_daemon(make_qcow2: Callable[..., Path],
                                               tmp_path: Path) -> None:
    image = make_qcow2("x.qcow2", "100G")
    drive = parse_drive("scsi0", f"{image},format=qcow2,cache=none,aio=native,"
                                 "qcow2-cache-size-based-on-disk=1").drive
    arguments = drive_blockdev(drive, Settings(home=tmp_path / "home", tools=Tools()),
                               read_only=True)
    assert arguments.top_node_name == "drive-scsi0"
    assert arguments.objects == [{"id": "throttle-drive-scsi0", "limits": {},
                                  "qom-type": "throttle-group"}]
    [top] = arguments.blockdevs
    fmt: dict[str, Any] = top["file"]
    assert fmt["cache-size"] == 16384000 and fmt["read-only"] is True
    assert fmt["file"]["aio"] == "native" and fmt["file"]["filename"] == str(image)


def test_showcmd_cli_errors(qemu_home: QemuHome, run_qdisk: Callable[..., Any]) -> None:
    result = run_qdisk("vm", "showcmd", str(VMID))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    qemu_home.write_config("memory: 512\n")
    result = run_qdisk("vm", "showcmd", str(VMID), "--qemu-version", "x")
    assert result.exit_code == 2 and "invalid QEMU version 'x'" in result.stderr
    result = run_qdisk("vm", "showcmd", str(VMID), "--syntax", "blockdev")
    assert result.exit_code == 0 and result.stdout.startswith("qemu-system-x86_64 -name ")

"""Hostile input to `qdisk vm` and `qdisk storage`: absurd values and damaged files are
refused with exit 2 and a message naming the key (or the file and line), nothing is
written, and no command answers with an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdisk.settings import Settings
from qdisk.vm import views

from cli_helpers import RunQdisk


@pytest.mark.parametrize(("arguments", "message"), [
    (["--memory", "1" * 5000], "  memory: value must have a maximum value of 9223372036854775807\n"),
    (["--cores", "-" + "1" * 5000], "  cores: value must have a minimum value of 1\n"),
    (["--scsi0", f"local:{'1' * 400}"],
     f"  scsi0: 'local:{'1' * 400}': the size of a new disk must be less than 8589934591 GiB "
     f"(8 EiB)\n"),
    (["--scsi0", f"local:{'1' * 5000}.5,format=qcow2"],
     f"  scsi0: 'local:{'1' * 5000}.5': the size of a new disk must be less than 8589934591 GiB "
     f"(8 EiB)\n"),
    (["--scsi0", f"local:1/x.raw,size={'1' * 500}"],
     "  scsi0.size: value must have a maximum value of 9223372036854775807 (bytes: 8 EiB - 1)\n"),
    (["--scsi0", "local:1/x.raw,serial=%00"],
     "  scsi0.serial: invalid format - the decoded value must be printable ASCII, not %00\n"),
    (["--virtio0", "local:1/x.raw,iops=-5"], "  virtio0.iops: value must have a minimum value of 0\n"),
    (["--scsi0", "/a\udcffb"], "  scsi0.file: value must be UTF-8 text\n"),
])
def test_create_refuses_absurd_values(vm_home: Path, run_qdisk: RunQdisk, config_file: Path,
                                      arguments: list[str], message: str) -> None:
    result = run_qdisk("vm", "create", "100", *arguments)
    assert (result.exit_code, result.stderr) == \
        (2, f"qdisk: VM 100: invalid values, nothing changed:\n{message}")
    assert not config_file.exists()
    assert not (vm_home / "storage/local/images").exists()


def test_set_refuses_throttle_values_qemu_would_refuse(vm_home: Path, run_qdisk: RunQdisk,
                                                       config_file: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    result = run_qdisk("vm", "set", "100", "--scsi0", "local:1/x.raw,mbps=1e12,iops_max=1",
                       "--sata0", "local:1/x.raw,mbps=1e-320")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1:] == [
        "  scsi0.mbps: value must have a maximum value of 953674316.40625 (10^15 bytes/s, "
        "QEMU's limit)",
        "  scsi0.iops_max: iops_max requires iops",
        "  sata0.mbps: value must be 0 (no limit) or at least 9.5367431640625e-07 (1 byte/s): "
        "QEMU counts whole bytes/s",
    ]
    assert config_file.read_text() == "memory: 64\n"


def test_a_description_of_bytes_that_are_not_utf8_keeps_them_encoded(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path) -> None:
    # A command-line argument's bytes that are not UTF-8 reach Python as lone surrogates.
    assert run_qdisk("vm", "create", "100", "--description", "a\udcffb").exit_code == 0
    assert config_file.read_text() == "#a%FFb\n"
    assert run_qdisk("vm", "config", "100").stdout == "description: a\ufffdb\n"


def _write_vm_100(vm_home: Path, data: bytes) -> None:
    (vm_home / "qemu-server").mkdir()
    (vm_home / "qemu-server" / "100.conf").write_bytes(data)


@pytest.mark.parametrize(("data", "problem"), [
    (b"memory: 64\nname: a\xffb\n", "line 2: not UTF-8 text (byte 0xFF)"),
    (b"#\xc3\n", "line 1: not UTF-8 text (byte 0xC3)"),
    (b"memory: 64\n\n[PENDING]\nname: a\x00b\n", "line 4: NUL character"),
])
@pytest.mark.parametrize("command", [["vm", "config", "100"], ["vm", "showcmd", "100"],
                                     ["vm", "set", "100", "--memory", "128"]])
def test_a_damaged_vm_config_is_named_with_its_line(vm_home: Path, run_qdisk: RunQdisk,
                                                    data: bytes, problem: str,
                                                    command: list[str]) -> None:
    _write_vm_100(vm_home, data)
    result = run_qdisk(*command)
    assert result.exit_code == 2
    assert result.stderr == f"qdisk: {vm_home}/qemu-server/100.conf: {problem}\n"
    assert (vm_home / "qemu-server" / "100.conf").read_bytes() == data


def test_vm_list_names_a_damaged_config_and_lists_the_others(vm_home: Path,
                                                             run_qdisk: RunQdisk) -> None:
    for vmid, name in ((100, "web"), (102, "db")):
        assert run_qdisk("vm", "create", str(vmid), "--name", name).exit_code == 0
    (vm_home / "qemu-server" / "101.conf").write_bytes(b"memory: 64\nname: a\xffb\n")
    result = run_qdisk("vm", "list")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [f"{100:>10} {'web':<24} stopped",
                                              f"{101:>10} {'(config unreadable)':<24} stopped",
                                              f"{102:>10} {'db':<24} stopped"]
    assert result.stderr == (f"warning: VM 101: config cannot be read: {vm_home}/qemu-server/"
                             "101.conf: line 2: not UTF-8 text (byte 0xFF)\n")
    # The service the web API lists from: every VM, the damaged one with its problem.
    listed = {summary.vmid: summary for summary in views.list_vms(Settings.from_env())}
    assert sorted(listed) == [100, 101, 102] and listed[100].problem is None
    assert listed[101].name is None and "line 2: not UTF-8 text" in str(listed[101].problem)


@pytest.mark.parametrize(("text", "problem"), [
    (b"dir: local\n\tpath /x\n\tcontent images\xfe\n", "line 3: not UTF-8 text (byte 0xFE)"),
    (b"dir: local\n\tpath /x\x00\n", "line 2: NUL character"),
    # Blanks are ASCII blanks (Perl's \s): a no-break space does not indent an option.
    ("dir: local\n\u00a0path /x\n".encode(), "line 2: expected 'TYPE: ID', got '\\xa0path /x'"),
    # Lines end at \n only: a form feed inside a line neither ends nor numbers one.
    (b"dir: local\n\tpath /x\x0c\nbad line\n", "line 3: expected 'TYPE: ID', got 'bad line'"),
])
def test_a_damaged_storage_cfg_is_named_with_its_line(home: Path, run_qdisk: RunQdisk,
                                                      text: bytes, problem: str) -> None:
    (home / "storage.cfg").write_bytes(text)
    result = run_qdisk("storage", "path", "local:100/vm-100-disk-0.raw")
    assert (result.exit_code, result.stderr) == (2, f"qdisk: {home}/storage.cfg: {problem}\n")


def test_list_shows_only_files_named_as_vm_configs(vm_home: Path, run_qdisk: RunQdisk) -> None:
    assert run_qdisk("vm", "create", "100", "--name", "web").exit_code == 0
    for name in ("0100", "99", "1" * 200, "1000000000", "١٢٣", "x"):
        (vm_home / "qemu-server" / f"{name}.conf").write_text("memory: 64\n")
    result = run_qdisk("vm", "list")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [f"{100:>10} {'web':<24} stopped"]


def test_long_blank_runs_in_a_config_are_values_of_their_own(vm_home: Path,
                                                             run_qdisk: RunQdisk) -> None:
    blanks = " " * 100_000
    _write_vm_100(vm_home, (f"scsi0:{blanks}/a{blanks}b{blanks}\ndescription:{blanks}x{blanks}\n"
                            f"memory:{blanks}\n").encode())
    result = run_qdisk("vm", "config", "100", "--json")
    assert result.exit_code == 0, result.stderr
    # qemu-server's (.+?)\s*$ keeps the last blank of a value that is only blanks.
    assert result.stdout.replace(blanks, "<blanks>") == (
        '{\n  "description": "x",\n  "scsi0": "/a<blanks>b",\n  "memory": " "\n}\n')

"""Golden-file tests in qemu-server's cfg2cmd style.

``cfg2cmd/NAME.conf`` is a VM config (VM 8006) with header comments:
``# TEST:`` what it shows, ``# QEMU_VERSION:`` (passed as --qemu-version),
``# SYNTAX:`` (optional --syntax), ``# EXPECT_ERROR:`` (exit 2 and this message),
``# EXPECT_WARN:`` (one per expected warning), ``# IMAGE: PATH SIZE [qemu-img options]``
(a real image created under the storage root before the command is built).
``NAME.conf.cmd`` is the expected ``qdisk vm showcmd --pretty`` output with the test's
tmp directory shown as ``/TMP``; missing ones are written, ``--regen-golden`` rewrites them.

Every golden command is also given to real QEMU: its -object/-blockdev arguments to
qemu-storage-daemon, its -drive arguments to qemu-system-x86_64 -machine none.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qdisk import storage
from qdisk.config.drive import Drive, parse_drive
from qdisk.config.vmconfig import drive_items, parse_vm_config
from qdisk.qemu.command import build_command, parse_version

from cmdline_helpers import GOLDEN_DIR, VMID, QemuHome, drive_set_nodes, iter_node_names, storage_daemon_nodes

CASES = sorted(GOLDEN_DIR.glob("*.conf"))


@dataclass
class Headers:
    test: str = ""
    qemu_version: str | None = None
    syntax: str | None = None
    expect_error: str | None = None
    expect_warn: list[str] = field(default_factory=list)
    images: list[list[str]] = field(default_factory=list)


def read_headers(text: str) -> Headers:
    headers = Headers()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        value = value.strip()
        match name:
            case "# TEST":
                headers.test = value
            case "# QEMU_VERSION":
                headers.qemu_version = value
            case "# SYNTAX":
                headers.syntax = value
            case "# EXPECT_ERROR":
                headers.expect_error = value
            case "# EXPECT_WARN":
                headers.expect_warn.append(value)
            case "# IMAGE":
                headers.images.append(shlex.split(value))
    assert headers.test, "every golden config says what it tests (# TEST:)"
    return headers


def showcmd(run_qdisk: Callable[..., Any], headers: Headers) -> Any:
    args = ["vm", "showcmd", str(VMID), "--pretty"]
    if headers.qemu_version:
        args += ["--qemu-version", headers.qemu_version]
    if headers.syntax:
        args += ["--syntax", headers.syntax]
    return run_qdisk(*args)


def _case(case: Path) -> Any:
    """A golden case; one that makes images (``# IMAGE:``) runs qemu-img."""
    marks = [pytest.mark.qemu] if "\n# IMAGE:" in f"\n{case.read_text()}" else []
    return pytest.param(case, marks=marks, id=case.stem)


@pytest.mark.parametrize("case", [_case(case) for case in CASES])
def test_cfg2cmd(case: Path, qemu_home: QemuHome, run_qdisk: Callable[..., Any], regen_golden: bool) -> None:
    text = case.read_text()
    headers = read_headers(text)
    for image in headers.images:
        qemu_home.create_image(*image)
    qemu_home.write_config(text)

    result = showcmd(run_qdisk, headers)

    warnings = [line.removeprefix("warning: ") for line in result.stderr.splitlines()
                if line.startswith("warning: ")]
    assert [qemu_home.normalise(w) for w in warnings] == headers.expect_warn
    if headers.expect_error is not None:
        assert result.exit_code == 2, result.stderr
        assert qemu_home.normalise(result.stderr.strip()) == f"qdisk: {headers.expect_error}"
        assert result.stdout == ""
        return
    assert result.exit_code == 0, result.stderr
    output = qemu_home.normalise(result.stdout)
    golden = case.with_name(case.name + ".cmd")
    if regen_golden:
        golden.write_text(output)
    assert golden.exists(), f"{golden.name} is missing: write it with pytest --regen-golden and review it"
    assert output == golden.read_text()


@pytest.mark.qemu
@pytest.mark.parametrize("case", [case for case in CASES
                                  if "EXPECT_ERROR" not in case.read_text()],
                         ids=lambda case: case.stem)
def test_cfg2cmd_real_qemu_accepts(case: Path, qemu_home: QemuHome) -> None:
    """Every golden's disks are opened by real QEMU (images created where missing; absolute
    paths moved into the tmp directory; host devices left out)."""
    text = case.read_text().replace(ABSOLUTE_DIR, f"{qemu_home.storage}/absolute/")
    headers = read_headers(text)
    for image in headers.images:
        qemu_home.create_image(*image)
    config = parse_vm_config(text, VMID)
    storage_config = storage.load(qemu_home.settings)
    for key, value in drive_items(config.current.values):
        create_missing_image(storage_config, parse_drive(key, value).drive, qemu_home)
    command = build_command(
        config, storage_config, qemu_home.settings,
        qemu_version=lambda: parse_version(headers.qemu_version or "7.2"),
        syntax="blockdev" if headers.syntax == "blockdev" else
        "drive" if headers.syntax == "drive" else None)
    argv = command.argv
    options = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1) if argv[i].startswith("-")]
    usable = [(option, value) for option, value in options if opens_here(value)]
    if command.syntax == "blockdev":
        nodes = storage_daemon_nodes([v for o, v in usable if o == "-object"],
                                     [v for o, v in usable if o == "-blockdev"])
    else:
        nodes = drive_set_nodes([v for o, v in usable if o == "-drive"])
    names = {node["node-name"] for node in nodes}
    expected = {name for key, name in iter_node_names(command)
                if opens_here(json.dumps(command.graphs[key].top))}
    assert expected <= names


# Golden configs name absolute paths here (stable node names); QEMU gets them under tmp.
ABSOLUTE_DIR = "/var/lib/images/"


def opens_here(argument: str) -> bool:
    """Whether QEMU can open the disk of an argument here: the host's devices (the CD-ROM
    drive, LVs, zvols, krbd, iSCSI LUNs) do not exist, Ceph and iSCSI servers are not
    reachable (tests/storage checks QEMU parses those nodes), and QEMU 7.2 lacks
    discard-no-unref (8.1)."""
    host_device = '"/dev/' in argument or "file=/dev/" in argument or argument.startswith("/dev/")
    network = any(mark in argument for mark in ('"driver": "rbd"', '"driver":"rbd"', '"driver": "iscsi"',
                                                '"driver":"iscsi"', "file=rbd:", "file=iscsi:"))
    return not (host_device or network or "discard-no-unref" in argument)


def create_missing_image(storage_config: storage.StorageConfig, drive: Drive,
                         home: QemuHome) -> None:
    """A small image for a volume a golden config names, so QEMU can open it."""
    if drive.file in ("none", "cdrom") or drive.file.startswith("/dev/"):
        return
    if drive.file.startswith("/"):
        path = Path(drive.file)
        if drive.get("format") == "qcow2":
            home.create_image(str(path.relative_to(home.storage)), "1G")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(65536))
        return
    try:
        volume = storage.resolve(storage_config, drive.file)
    except storage.StorageError:
        return
    path = Path(volume.path)
    if volume.remote is None and path.is_relative_to(home.storage) and not path.exists():
        home.create_image(str(path.relative_to(home.storage)), "1G")

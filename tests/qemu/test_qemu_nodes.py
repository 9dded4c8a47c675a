"""The node graph of a drive over real images: backing nodes get the driver the overlay's
header names (as QEMU opens the chain itself), and no image using an external data file
reaches QEMU."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from qdisk import storage
from qdisk.config.drive import parse_drive
from qdisk.qemu.blockdev import drive_blockdev, to_json
from qdisk.qemu.nodes import DriveGraphError, format_node, resolve_disk
from qdisk.settings import Tools

from cmdline_helpers import VMID, QemuHome, storage_daemon_nodes, walk

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

TOP = f"local/images/{VMID}/vm-{VMID}-disk-0.qcow2"
AUTO = f"local:{VMID}/vm-{VMID}-disk-0.qcow2,qcow2-cache-size-based-on-disk=1"
PLAIN = f"local:{VMID}/vm-{VMID}-disk-0.qcow2"


def opened_layers(qemu_home: QemuHome, drive_text: str) -> set[tuple[str, str]]:
    """(format driver, file) of every format node qemu-storage-daemon opens for the drive:
    the images of the chain as QEMU reads them."""
    arguments = drive_blockdev(parse_drive("scsi0", drive_text).drive, qemu_home.settings,
                               read_only=True)
    nodes = storage_daemon_nodes([to_json(obj) for obj in arguments.objects],
                                 [to_json(blockdev) for blockdev in arguments.blockdevs])
    return {(node["drv"], image_file(node["file"])) for node in nodes
            if node["drv"] not in ("throttle", "file")}


def image_file(name: str) -> str:
    """The file of a format node: QEMU names a node with explicit children ``json:{...}``."""
    return str(json.loads(name[len("json:"):])["file"]["filename"]) if name.startswith("json:") \
        else name


@pytest.mark.parametrize("backing_format", ["qcow2", "raw"])
def test_explicit_backing_nodes_open_as_qemu_opens_the_header(qemu_home: QemuHome,
                                                              backing_format: str) -> None:
    """base.qcow2 is a qcow2 file; with -F raw QEMU reads it as raw, and so must the
    explicit node qdisk builds for it."""
    base = qemu_home.create_image(f"local/images/{VMID}/base.qcow2", "1G")
    qemu_home.create_image(TOP, "2G", "-b", "base.qcow2", "-F", backing_format)
    expected = {("qcow2", str(qemu_home.storage / TOP)), (backing_format, str(base))}
    assert opened_layers(qemu_home, PLAIN) == expected  # QEMU reading the header
    assert opened_layers(qemu_home, AUTO) == expected  # qdisk's explicit nodes


def test_a_raw_backing_layer_gets_no_qcow2_cache_options(qemu_home: QemuHome) -> None:
    qemu_home.create_image(f"local/images/{VMID}/base.qcow2", "1T")
    qemu_home.create_image(TOP, "2G", "-b", "base.qcow2", "-F", "raw")
    node = format_node(resolve_disk(parse_drive("scsi0", AUTO).drive,
                                    storage.load(qemu_home.settings)), tools=TOOLS)
    backing = node["backing"]
    assert (node["driver"], node["cache-size"]) == ("qcow2", 524288)
    assert backing["driver"] == "raw" and "cache-size" not in backing


def test_a_protocol_driver_as_backing_format_reads_the_file_as_raw(qemu_home: QemuHome) -> None:
    """-F file: QEMU puts a bare file node below the overlay; qdisk a raw node over it."""
    base = qemu_home.create_image(f"local/images/{VMID}/base.qcow2", "1G")
    qemu_home.create_image(TOP, "2G", "-b", "base.qcow2", "-F", "file")
    node = format_node(resolve_disk(parse_drive("scsi0", AUTO).drive,
                                    storage.load(qemu_home.settings)), tools=TOOLS)
    assert [(n["driver"], n.get("filename")) for n in walk(node)] == [
        ("qcow2", None), ("file", str(qemu_home.storage / TOP)), ("raw", None),
        ("file", str(base))]
    assert ("raw", str(base)) in opened_layers(qemu_home, AUTO)


def graph_error(qemu_home: QemuHome, drive_text: str, **kwargs: Any) -> str:
    disk = resolve_disk(parse_drive("scsi0", drive_text).drive, storage.load(qemu_home.settings))
    with pytest.raises(DriveGraphError) as caught:
        format_node(disk, **kwargs, tools=TOOLS)
    return str(caught.value)


@pytest.mark.parametrize(("drive_text", "options"), [
    (PLAIN, {}), (AUTO, {}), (PLAIN, {"explicit_backing": True}),
    (f"local:{VMID}/vm-{VMID}-disk-0.qcow2,qcow2-l2-cache-size=8", {})])
def test_a_data_file_anywhere_in_the_chain_is_refused(qemu_home: QemuHome, drive_text: str,
                                                      options: dict[str, bool]) -> None:
    directory = qemu_home.storage / "local" / "images" / str(VMID)
    qemu_home.create_image(f"local/images/{VMID}/base.qcow2", "1G", "-o",
                           f"data_file={directory}/base.data")
    qemu_home.create_image(f"local/images/{VMID}/mid.qcow2", "1G", "-b", "base.qcow2",
                           "-F", "qcow2")
    qemu_home.create_image(TOP, "1G", "-b", "mid.qcow2", "-F", "qcow2")
    assert graph_error(qemu_home, drive_text, **options) == (
        f"scsi0: {directory}/base.qcow2: qcow2 image with an external data file "
        f"({directory}/base.data) is not supported (Proxmox VE refuses them)")


def test_a_missing_image_without_the_auto_size_is_left_to_qemu(qemu_home: QemuHome) -> None:
    node = format_node(resolve_disk(parse_drive("scsi0", PLAIN).drive,
                                    storage.load(qemu_home.settings)), tools=TOOLS)
    assert node["file"]["filename"] == str(qemu_home.storage / TOP) and "backing" not in node


def test_vm_start_refuses_a_data_file_before_qemu_runs(qemu_home: QemuHome,
                                                      run_qdisk: Callable[..., Any]) -> None:
    qemu_home.create_image(TOP, "1G", "-o", "data_file=disk.data")
    qemu_home.write_config(f"memory: 64\nscsi0: {PLAIN}\n")
    result = run_qdisk("vm", "start", str(VMID))
    try:
        assert (result.exit_code, result.stderr) == (
            2, f"qdisk: scsi0: {qemu_home.storage / TOP}: qcow2 image with an external data file "
               "(disk.data) is not supported (Proxmox VE refuses them)\n")
    finally:
        if result.exit_code == 0:
            run_qdisk("vm", "stop", str(VMID))
    assert not (qemu_home.home / "run" / f"{VMID}.pid").exists()


def test_a_filter_driver_as_backing_format_gets_no_explicit_node(qemu_home: QemuHome) -> None:
    """QEMU opens a base named ``-F blkdebug`` through that filter; its node takes an
    ``image`` child, not a file node: the auto size refuses it, QEMU alone opens it."""
    qemu_home.create_image(f"local/images/{VMID}/base.qcow2", "1G")
    qemu_home.create_image(TOP, "2G", "-u", "-b", "base.qcow2", "-F", "blkdebug")
    directory = qemu_home.storage / "local" / "images" / str(VMID)
    assert graph_error(qemu_home, AUTO) == (
        f"scsi0: {directory}/base.qcow2: its overlay's header names the backing format "
        "'blkdebug', not an image format: qdisk cannot give it a node of its own")
    assert ("qcow2", str(qemu_home.storage / TOP)) in opened_layers(qemu_home, PLAIN)

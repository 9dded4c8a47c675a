"""Real QEMU runs of generated commands: a whole VM under TCG (paused, QMP shows the node
names), and hostile names that must not add or change a single QEMU option."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from qdisk import storage
from qdisk.config.drive import parse_drive
from qdisk.config.vmconfig import drive_items, parse_vm_config
from qdisk.qemu.blockdev import to_json
from qdisk.qemu.command import Syntax, build_command, format_command, parse_version
from qdisk.qemu.drivestr import drive_string
from qdisk.qemu.nodes import drive_graph
from qdisk.settings import Tools
from qdisk.system.tools import qemu_version

from cmdline_helpers import (
    GOLDEN_DIR,
    VMID,
    QemuHome,
    drive_set_nodes,
    iter_node_names,
    storage_daemon_nodes,
    walk,
)

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

WHOLE_VM = """\
name: whole
memory: 256
cores: 1
boot: order=scsi0;ide2
scsihw: virtio-scsi-pci
ide2: local:iso/debian.iso,media=cdrom
scsi0: local:8006/vm-8006-disk-0.qcow2,discard=on,qcow2-cache-size-based-on-disk=1
virtio0: local:8006/vm-8006-disk-1.raw,cache=writeback,iothread=1
sata0: local:8006/vm-8006-disk-2.qcow2,qcow2-l2-cache-size=1,qcow2-cache-clean-interval=5
"""


async def qmp_query(socket: Path, commands: Sequence[str]) -> list[Any]:
    client = QMPClient("qdisk-test")
    await client.connect(str(socket))
    try:
        return [await client.execute(command) for command in commands]
    finally:
        await client.disconnect()


@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_whole_command_runs_under_tcg(syntax: Syntax, qemu_home: QemuHome,
                                      daemonized_qemu: Callable[[Sequence[str], Path], int]) -> None:
    qemu_home.create_image("local/images/8006/base.qcow2", "4G")
    qemu_home.create_image("local/images/8006/vm-8006-disk-0.qcow2", "8G", "-b", "base.qcow2",
                           "-F", "qcow2")
    qemu_home.create_image("local/images/8006/vm-8006-disk-1.raw", "64M")
    qemu_home.create_image("local/images/8006/vm-8006-disk-2.qcow2", "1G")
    qemu_home.create_image("local/template/iso/debian.iso", "1M")
    settings = qemu_home.settings
    command = build_command(parse_vm_config(WHOLE_VM, VMID), storage.load(settings), settings,
                            # The nodes the QEMU that runs them takes.
                            qemu_version=lambda: qemu_version(settings.tools.qemu_system), syntax=syntax,
                            accel="tcg")
    run = settings.layout.run_dir
    run.mkdir()

    daemonized_qemu([*command.argv, "-S"], run / f"{VMID}.pid")
    blocks, nodes, status = asyncio.run(qmp_query(
        run / f"{VMID}.qmp", ["query-block", "query-named-block-nodes", "query-status"]))

    assert status["status"] == "prelaunch"
    names = {node["node-name"] for node in nodes}
    expected = {name for _, name in iter_node_names(command)}
    assert expected <= names
    # scsi0's chain: top and base qcow2 nodes with our names, the base read-only.
    chain = [node for node in walk(command.graphs["scsi0"].format_node or {})
             if node["driver"] == "qcow2"]
    assert len(chain) == 2
    by_name = {node["node-name"]: node for node in nodes}
    assert by_name[chain[1]["node-name"]]["ro"] is True
    assert by_name[chain[0]["node-name"]]["ro"] is False
    assert by_name[chain[0]["node-name"]]["detect_zeroes"] == "unmap"
    # Every disk is attached to its device front end.
    attached = {block["qdev"] for block in blocks}
    assert attached == {"scsi0", "sata0", "ide2", "/machine/peripheral/virtio0/virtio-backend"}


# Characters that end or start options in QEMU's key=value syntax, in JSON or in a shell.
HOSTILE = ",=x,read-only=on,driver=raw ' \" $(true) `true`"


@pytest.fixture
def hostile_chain(qemu_home: QemuHome) -> tuple[QemuHome, list[Path]]:
    """A storage whose path has , = ' " and spaces, an image named with ' " and =, backed by an
    image whose name has , = ' " spaces and a newline: paths QEMU must open as they are."""
    storage_root = qemu_home.storage / f"odd{HOSTILE}"
    (qemu_home.home / "storage.cfg").write_text(
        f"dir: hostile\n\tpath {storage_root}\n\tcontent images\n")
    images = storage_root / "images" / str(VMID)
    images.mkdir(parents=True)
    base_name = f"base{HOSTILE}\nfile.filename=/etc/passwd.qcow2"
    base = qemu_home.create_image(str((images / base_name).relative_to(qemu_home.storage)), "1G")
    top = qemu_home.create_image(str((images / "it's\"x\"=y.qcow2").relative_to(qemu_home.storage)),
                                 "2G", "-b", base_name, "-F", "qcow2")
    return qemu_home, [top, base]


@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_hostile_names_cannot_inject_options(syntax: Syntax,
                                             hostile_chain: tuple[QemuHome, list[Path]]) -> None:
    home, paths = hostile_chain
    drive = parse_drive("scsi0", "file=hostile:8006/it's\"x\"=y.qcow2,"
                                 "qcow2-cache-size-based-on-disk=1").drive
    graph = drive_graph(drive, storage.load(home.settings), tools=TOOLS)
    if syntax == "blockdev":
        nodes = storage_daemon_nodes([to_json(graph.throttle_group)], [to_json(graph.top)])
    else:
        nodes = drive_set_nodes([drive_string(graph)])

    files = {node["node-name"]: node for node in nodes if node["drv"] == "file"}
    format_nodes = [node for node in walk(graph.format_node or {}) if node["driver"] == "qcow2"]
    opened = [files[node["file"]["node-name"]] for node in format_nodes]
    # Exactly our files, with the flags we asked for (no injected read-only, driver, filename).
    assert [node["file"] for node in opened] == [str(path) for path in paths]
    assert [node["ro"] for node in opened] == [False, True]
    assert len([node for node in nodes if node["drv"] == "qcow2"]) == 2
    assert not [node for node in nodes if node["drv"] == "raw"]


def test_hostile_names_survive_shell_quoting(hostile_chain: tuple[QemuHome, list[Path]]) -> None:
    home, _ = hostile_chain
    config = parse_vm_config("scsi0: file=hostile:8006/it's\"x\"=y.qcow2,"
                             "qcow2-cache-size-based-on-disk=1\n", VMID)
    for syntax in ("blockdev", "drive"):
        command = build_command(config, storage.load(home.settings), home.settings,
                                qemu_version=lambda: (7, 2), syntax=syntax)
        assert shlex.split(format_command(command.argv)) == command.argv
        pretty = format_command(command.argv, pretty=True).replace(" \\\n", " ")
        assert shlex.split(pretty) == command.argv


def _told_placements(argv: list[str]) -> dict[str, tuple[str, int]]:
    """What the command asks: device id -> (its bus, its slot), for every PCI device."""
    told = {}
    for previous, argument in zip(argv, argv[1:]):
        if previous != "-device" or ",addr=" not in argument:
            continue
        options = dict(part.split("=", 1) for part in argument.split(",")[1:] if "=" in part)
        told[options["id"]] = (options["bus"], int(options["addr"], 16))
    return told


@pytest.mark.parametrize("case", ["pci-bridges-lsi-pc", "pci-bridges-lsi-q35",
                                  "pci-bridges-lsi53c810-drive",
                                  "pci-bridges-virtio-scsi-single-q35"])
def test_bridged_devices_sit_where_the_command_puts_them(
        case: str, qemu_home: QemuHome,
        daemonized_qemu: Callable[[Sequence[str], Path], int]) -> None:
    """qemu-server's PCI addresses and bridges, given to real QEMU (paused): it accepts
    them, and holds every device on the bus and slot the command names (QOM: the firmware,
    which numbers the bridges' buses, never runs)."""
    text = (GOLDEN_DIR / f"{case}.conf").read_text()
    config = parse_vm_config(text, VMID)
    for key, value in drive_items(config.current.values):
        path = parse_drive(key, value).drive.file.split(":", 1)[1]
        qemu_home.create_image(f"local/images/{path}", "1M")
    settings = qemu_home.settings
    command = build_command(config, storage.load(settings), settings,
                            qemu_version=lambda: parse_version("7.2"), accel="tcg",
                            syntax="drive" if case.endswith("-drive") else "blockdev")
    argv = command.argv
    run = settings.layout.run_dir
    run.mkdir()

    daemonized_qemu([*argv, "-S"], run / f"{VMID}.pid")
    told = _told_placements(argv)
    placed = asyncio.run(_placements(run / f"{VMID}.qmp", list(told)))

    assert len(told) >= 8
    for device, (bus, slot) in told.items():
        parent_bus, devfn = placed[device]
        assert parent_bus.endswith(f"/{bus}") and devfn == slot << 3, (device, placed[device])


async def _placements(socket: Path, devices: list[str]) -> dict[str, tuple[str, int]]:
    """Each device's bus (its QOM path) and PCI address (devfn: slot << 3 | function) as
    QEMU holds them."""
    client = QMPClient("qdisk-test")
    await client.connect(str(socket))
    try:
        placed = {}
        for device in devices:
            path = f"/machine/peripheral/{device}"
            placed[device] = (
                str(await client.execute("qom-get", {"path": path, "property": "parent_bus"})),
                int(await client.execute("qom-get", {"path": path, "property": "addr"})))
        return placed
    finally:
        await client.disconnect()


@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_a_templates_disks_run_read_only_except_on_sata(
        syntax: Syntax, qemu_home: QemuHome,
        daemonized_qemu: Callable[[Sequence[str], Path], int]) -> None:
    """qemu-server's drive_is_read_only: QEMU refuses a read-only node under an IDE/SATA
    disk ("Block node is read-only"), so a template's SATA disk is not read-only; its
    -snapshot keeps writes to a -drive disk off the base image."""
    config = parse_vm_config((GOLDEN_DIR / f"template-{syntax}.conf").read_text(), VMID)
    qemu_home.create_image("local/images/8006/base-8006-disk-0.qcow2", "1M")
    qemu_home.create_image("local/images/8006/base-8006-disk-1.raw", "1M")
    settings = qemu_home.settings
    command = build_command(config, storage.load(settings), settings, syntax=syntax,
                            qemu_version=lambda: parse_version("7.2"), accel="tcg")
    run = settings.layout.run_dir
    run.mkdir()

    daemonized_qemu([*command.argv, "-S"], run / f"{VMID}.pid")
    [blocks] = asyncio.run(qmp_query(run / f"{VMID}.qmp", ["query-block"]))

    inserted = {block["qdev"].rsplit("/", 2)[-2] if block["qdev"].startswith("/") else
                block["qdev"]: block["inserted"] for block in blocks}
    assert {key: node["ro"] for key, node in inserted.items()} == {"scsi0": True, "sata0": False}
    # qemu-server's -snapshot: a -drive disk is written to a temporary overlay over the base
    # image; -blockdev nodes are not affected (as with qemu-server's).
    formats, image = [], inserted["sata0"]["image"]
    while image is not None:
        formats.append(image["format"])
        image = image.get("backing-image")
    if syntax == "drive":
        assert formats == ["qcow2", "raw"], formats  # the temporary overlay on top
    else:
        assert "qcow2" not in formats, formats

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
from qdisk.config.vmconfig import parse_vm_config
from qdisk.qemu.blockdev import to_json
from qdisk.qemu.command import Syntax, build_command, format_command
from qdisk.qemu.drivestr import drive_string
from qdisk.qemu.nodes import drive_graph
from qdisk.settings import Tools
from qdisk.system.tools import qemu_version

from cmdline_helpers import VMID, QemuHome, drive_set_nodes, iter_node_names, storage_daemon_nodes, walk

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

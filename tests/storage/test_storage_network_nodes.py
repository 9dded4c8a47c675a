"""QEMU accepts qdisk's rbd and iscsi nodes: with no server here it fails to connect, never
on the arguments. Only loopback is ever named (closed port 1: iSCSI is refused at once;
librbd stops before contacting a monitor, as its fake keyring is nowhere in its conf)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qdisk import storage
from qdisk.config.drive import parse_drive
from qdisk.qemu.blockdev import to_json
from qdisk.qemu.drivestr import drive_string
from qdisk.qemu.nodes import Node, drive_graph
from qdisk.settings import Tools

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

STORAGE_CFG = """\
rbd: ceph-ext
\tmonhost 127.0.0.1:1
\tpool vms
\tnamespace tenant
\tusername client1

iscsidirect: san
\tportal 127.0.0.1:1
\ttarget iqn.2001-05.com.example:storage.direct

zfs: zfs-iscsi
\tiscsiprovider LIO
\tpool tank
\tportal 127.0.0.1:1
\ttarget iqn.2003-01.org.linux-iscsi.nas:sn.1
"""
# A syntax error QEMU reports before it connects anywhere.
SYNTAX_ERRORS = ("unexpected", "Invalid parameter", "expects", "is missing", "Unknown driver")


@pytest.fixture
def network_storages(tmp_path: Path) -> storage.StorageConfig:
    private = tmp_path / "priv"
    (private / "ceph").mkdir(parents=True)
    (private / "zfs").mkdir()
    (private / "ceph/ceph-ext.conf").write_text("[global]\n\tmon_host = 127.0.0.1:1\n"
                                                "\tclient_mount_timeout = 1\n")
    (private / "ceph/ceph-ext.keyring").write_text("[client.client1]\n\tkey = AQBfake==\n")
    (private / "zfs/zfs-iscsi.luns").write_text("vm-100-disk-0 2\n")
    return storage.parse_storage_cfg(STORAGE_CFG, config_dir=tmp_path)


def _qemu(*arguments: str) -> str:
    """QEMU's stderr; it must fail (nothing to connect to)."""
    result = subprocess.run(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                             "-S", *arguments], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, "QEMU started without a server to connect to"
    return result.stderr


def _blockdev_arguments(top: Node, group: Node) -> tuple[str, ...]:
    return ("-object", to_json(group), "-blockdev", to_json(top))


@pytest.mark.parametrize(("volid", "connection_error"), [
    ("ceph-ext:vm-100-disk-0", "error connecting"),
    ("san:lun1", "Failed to connect to LUN"),
    ("zfs-iscsi:vm-100-disk-0", "Failed to connect to LUN"),
])
@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_qemu_parses_the_network_node_and_tries_to_connect(
        network_storages: storage.StorageConfig, volid: str, connection_error: str, syntax: str) -> None:
    graph = drive_graph(parse_drive("scsi0", volid).drive, network_storages, tools=TOOLS)
    assert graph.top is not None
    if syntax == "blockdev":
        stderr = _qemu(*_blockdev_arguments(graph.top, graph.throttle_group))
    else:
        stderr = _qemu("-drive", drive_string(graph))
    assert connection_error in stderr
    assert not any(error in stderr for error in SYNTAX_ERRORS), stderr


def test_qemu_refuses_a_wrong_node_before_connecting(network_storages: storage.StorageConfig) -> None:
    """The check above means something: a wrong option is reported as such, not as a
    connection failure."""
    graph = drive_graph(parse_drive("scsi0", "san:lun1").drive, network_storages, tools=TOOLS)
    assert graph.top is not None
    graph.top["file"]["file"]["lun"] = "one"
    stderr = _qemu(*_blockdev_arguments(graph.top, graph.throttle_group))
    assert "Invalid parameter type for 'file.file.lun', expected: integer" in stderr

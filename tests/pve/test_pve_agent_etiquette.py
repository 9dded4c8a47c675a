"""The agent's etiquette with qemu-server, counted (in this process, one node, real QEMU):
a QMP session only when the cheap check says something may need doing, never in an idle
cycle, a confirmation of node names only when it is due, none for a VM without settings,
none after a restart whose record matches."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdisk.pve import apply
from qdisk.pve.agent import Agent
from qdisk.pve.host import PveHost
from qdisk.qemu.qmp import QmpConnection

from pve_helpers import THIS_NODE, PveTree

pytestmark = pytest.mark.qemu

CONFIRM_INTERVAL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The QMP sockets of every session pve/apply opens, in order."""
    opened: list[Path] = []
    session = apply.qmp_session

    @contextlib.contextmanager
    def counted(socket: Path, **options: float) -> Iterator[QmpConnection]:
        opened.append(socket)
        with session(socket, **options) as qmp:
            yield qmp

    monkeypatch.setattr(apply, "qmp_session", counted)
    return opened


def agent(tree: PveTree, clock: Clock, log: list[str]) -> Agent:
    host = PveHost.from_env({"QDISK_PVE_ROOT": str(tree.root), "QDISK_PVE_NODE": THIS_NODE})
    new = Agent(host, log.append, confirm_interval=CONFIRM_INTERVAL, clock=clock)
    new.start()
    return new


def rewrite(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    temporary.rename(path)


def test_sessions_only_when_something_may_need_doing(tree: PveTree, sessions: list[Path]) -> None:
    tree.start(100)
    tree.start(102)  # locked (backup): never asked
    settings = tree.settings_path(100)
    settings.parent.mkdir()
    settings.write_text("scsi0: qcow2-l2-cache-size=64\n")
    clock, log = Clock(), []
    node = agent(tree, clock, log)

    node.cycle()
    assert len(sessions) == 1 and any("l2-cache-size 64 MiB applied live" in line for line in log)
    for _ in range(3):
        node.cycle()
    assert len(sessions) == 1, "an idle cycle asked QEMU"

    rewrite(settings, settings.read_text())  # a new version, the same settings
    node.cycle()
    assert len(sessions) == 1
    rewrite(settings, "scsi0: qcow2-l2-cache-size=128\n")
    node.cycle()
    assert len(sessions) == 2 and "l2-cache-size 128 MiB applied live" in log[-1]

    clock.now += CONFIRM_INTERVAL - 1
    node.cycle()
    assert len(sessions) == 2
    clock.now += 1
    lines = len(log)
    node.cycle()  # the node names confirmed: QEMU has them, nothing logged
    assert len(sessions) == 3 and len(log) == lines
    node.cycle()
    assert len(sessions) == 3

    # Restarted: its record says QEMU has the settings; no session until a confirmation.
    again = agent(tree, clock, log)
    again.cycle()
    again.cycle()
    assert len(sessions) == 3 and not [line for line in log[lines:] if "VM 100" in line]
    assert sessions == [tree.run_dir / "100.qmp"] * 3
    assert log.count("VM 102: locked (backup): Proxmox VE is in the middle of an operation on "
                     "it; left alone, retried") == 2  # once per agent


def test_a_resize_seen_in_the_header_opens_a_session(tree: PveTree, sessions: list[Path]) -> None:
    tree.start(100)
    settings = tree.settings_path(100)
    settings.parent.mkdir()
    settings.write_text("scsi1: qcow2-cache-size-based-on-disk=1\n")
    clock, log = Clock(), []
    node = agent(tree, clock, log)
    node.cycle()
    assert len(sessions) == 1
    node.cycle()
    top = tree.record(100)["disks"]["scsi1"]["nodes"][0]["node-name"]
    with tree.qmp(100) as qmp:
        qmp.execute("block_resize", {"node-name": top, "size": 8 * 2**40})

    node.cycle()

    assert len(sessions) == 2
    # 8 TiB with 64 KiB clusters: 1280 MiB for the top; the template's base keeps its own.
    assert "vm-100-disk-1.qcow2: qcow2 cache cache-size 1.2 GiB applied live" in log[-1]
    assert [node["cache"] for node in tree.record(100)["disks"]["scsi1"]["nodes"]] == \
        [{"cache-size": 1280 * 2**20}, {"cache-size": 640 * 2**20}]


def test_no_session_while_qemu_server_holds_the_vms_lock(tree: PveTree, sessions: list[Path]) -> None:
    """qm start still talking to its new QEMU (or qm set, qm resize) holds qemu-server's
    flock of the VM: the agent leaves the monitor to it and asks on a later cycle."""
    tree.start(100)
    settings = tree.settings_path(100)
    settings.parent.mkdir()
    settings.write_text("scsi0: qcow2-l2-cache-size=64\n")
    lock = tree.root / "var/lock/qemu-server/lock-100.conf"
    lock.parent.mkdir(parents=True)
    clock, log = Clock(), []
    node = agent(tree, clock, log)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        node.cycle()
        node.cycle()
        assert sessions == []
    node.cycle()
    assert sessions == [tree.run_dir / "100.qmp"]
    assert any("l2-cache-size 64 MiB applied live" in line for line in log)

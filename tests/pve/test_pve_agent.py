"""``qdisk pve agent`` on two simulated nodes (:mod:`agent_helpers`): a setting made on one
node reaches a VM running on the other, a VM moved between nodes gets its cache, a disk
resized live gets the larger automatic cache, nodes replaced over QMP get theirs again;
all checked through QMP (the nodes QEMU runs are the ones the record names) and through
the QEMU process's address space (VmSize holds each qcow2 cache). No hookscript: the
VMs' configs name none. A second client reaches every QMP socket all along."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_helpers import GREETING_BOUND, INTERVAL, Cluster, Prober, two_nodes
from qdisk.config.drive import parse_drive
from qdisk.qemu.blockdev import reopen_options
from qdisk.qemu.nodes import format_node, resolve_disk
from qdisk.qemu.reopen import running_chain
from qdisk.settings import Tools
from qdisk.storage import parse_storage_cfg

from pve_helpers import MIB, NOISE, OTHER_NODE, THIS_NODE, vm_size
from qemu_helpers import kill_and_wait

pytestmark = pytest.mark.qemu

# QEMU's L2 cache of an image of 256 GiB or more when no option is given.
DEFAULT_L2 = 32 * MIB
# The automatic size of a 1 TiB and of a 4 TiB image with 64 KiB clusters.
AUTO_1T = 160 * MIB
AUTO_4T = 640 * MIB


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Prober]]:
    with two_nodes(tmp_path) as nodes:
        yield nodes
    _cluster, prober = nodes
    print(f"second client: {prober.count} greetings, the longest after {prober.longest * 1e3:.0f} ms")
    # A second client got QEMU's greeting at every try, and soon, while the agents ran.
    assert prober.count > 0 and not prober.failures, (prober.count, prober.failures)
    assert prober.longest < GREETING_BOUND, f"a second client waited {prober.longest:.2f} s"


def shared_vm(cluster: Cluster, vmid: int, node: str, size: str = "4T", *,
              backing: bool = False) -> None:
    """VM ``vmid`` of ``node`` with one disk on the shared storage (a linked clone of a
    template's base image with ``backing``)."""
    name = f"vm-{vmid}-disk-0.qcow2"
    if backing:
        cluster.a.image("srv/shared", vmid, f"base-{vmid}.qcow2", size)
        cluster.a.image("srv/shared", vmid, name, size, "-b", f"base-{vmid}.qcow2", "-F", "qcow2")
    else:
        cluster.a.image("srv/shared", vmid, name, size)
    cluster.a.write_vm(vmid, {"memory": "32", "scsihw": "virtio-scsi-single",
                              "scsi0": f"shared:{vmid}/{name},size={size}"}, node=node)


def assert_grown(pid: int, before: int, expected: int) -> None:
    grown = vm_size(pid) - before
    assert expected - NOISE < grown < expected + NOISE, \
        f"grown by {grown / MIB:.0f} MiB, expected {expected / MIB:.0f} MiB"


def assert_qemu_runs_the_recorded_nodes(cluster: Cluster, vmid: int, node: str,
                                        caches: list[dict[str, int]]) -> None:
    """QEMU's chain under scsi0 is the one the node's record names, and the record gives
    each qcow2 node ``caches`` (top first)."""
    record = cluster.record(vmid, node)["disks"]["scsi0"]
    with cluster.qmp(vmid, node) as qmp:
        chain = running_chain(qmp, "scsi0", "drive-scsi0")
    assert [level.node_name for level in chain] == [level["node-name"] for level in record["chain"]]
    assert [applied["node-name"] for applied in record["nodes"]] == \
        [level.node_name for level in chain if level.driver == "qcow2"]
    assert [applied["cache"] for applied in record["nodes"]] == caches


def test_a_setting_made_on_node_a_reaches_a_vm_running_on_node_b_within_two_intervals(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    shared_vm(nodes, 300, OTHER_NODE)
    pid = nodes.start_vm(300, OTHER_NODE)
    before = vm_size(pid)
    nodes.start_agent(THIS_NODE)
    agent_b = nodes.start_agent(OTHER_NODE)
    seen = len(agent_b.lines())

    set_on_a = nodes.qdisk(THIS_NODE, "pve", "set", "300", "--scsi0", "qcow2-l2-cache-size=512")
    stored = time.monotonic()

    assert set_on_a.returncode == 0, set_on_a.stderr
    assert "VM 300 belongs to node pve2: the settings apply there through its agent" \
        in set_on_a.stdout and set_on_a.stderr == ""
    line = agent_b.wait_for("VM 300: scsi0: ", after=seen)
    took = time.monotonic() - stored
    assert "qcow2 cache l2-cache-size 512 MiB applied live" in line
    assert took < 2 * INTERVAL, f"applied {took:.2f} s after it was stored"
    assert_grown(pid, before, 512 * MIB - DEFAULT_L2)
    assert_qemu_runs_the_recorded_nodes(nodes, 300, OTHER_NODE, [{"l2-cache-size": 512 * MIB}])
    # Node A's agent has no QEMU of the VM: it neither acted nor recorded it.
    assert "300" not in nodes.node_status(THIS_NODE)["vms"]
    status = nodes.node_status(OTHER_NODE)["vms"]["300"]["disks"]["scsi0"]
    assert status["settings"] == "qcow2-l2-cache-size=512" and status["problem"] is None


def test_a_vm_stopped_on_a_and_started_on_b_gets_its_cache_there(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    shared_vm(nodes, 301, THIS_NODE, "1T")
    nodes.write_settings(301, "scsi0: qcow2-cache-size-based-on-disk=1\n")
    agent_a, agent_b = nodes.start_agent(THIS_NODE), nodes.start_agent(OTHER_NODE)
    pid_a = nodes.start_vm(301, THIS_NODE)
    agent_a.wait_for("VM 301: scsi0: ")
    # Moved as Proxmox VE moves a stopped VM: QEMU ends on A, the config goes to B's
    # directory, QEMU starts on B.
    nodes.a.kill_all()
    nodes.a.config_path(301).rename(nodes.a.config_path(301, OTHER_NODE))
    seen = len(agent_b.lines())
    pid_b = nodes.start_vm(301, OTHER_NODE)
    before = vm_size(pid_b)

    line = agent_b.wait_for("VM 301: scsi0: ", after=seen)

    assert "qcow2 cache cache-size 160 MiB applied live" in line
    assert_grown(pid_b, before, AUTO_1T - DEFAULT_L2)
    assert_qemu_runs_the_recorded_nodes(nodes, 301, OTHER_NODE, [{"cache-size": AUTO_1T}])
    assert nodes.record(301, OTHER_NODE)["pid"] == pid_b != pid_a
    # A forgot the VM it no longer runs; the audit on A sees it applied on B.
    deadline = time.monotonic() + 5 * INTERVAL
    while "301" in nodes.node_status(THIS_NODE)["vms"]:
        assert time.monotonic() < deadline, nodes.node_status(THIS_NODE)
        time.sleep(0.1)
    audit = nodes.qdisk(THIS_NODE, "pve", "audit", "--all-nodes")
    assert audit.returncode == 0, audit.stderr
    assert "  settings: applied on pve2 (scsi0 at " in audit.stdout.split("VM 301")[1]


def test_a_disk_resized_live_gets_the_larger_automatic_cache(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    shared_vm(nodes, 302, OTHER_NODE, "1T")
    nodes.write_settings(302, "scsi0: qcow2-cache-size-based-on-disk=1\n")
    pid = nodes.start_vm(302, OTHER_NODE)
    agent_b = nodes.start_agent(OTHER_NODE)
    agent_b.wait_for("VM 302: scsi0: ")
    before = vm_size(pid)
    seen = len(agent_b.lines())
    top = nodes.record(302, OTHER_NODE)["disks"]["scsi0"]["nodes"][0]["node-name"]

    with nodes.qmp(302, OTHER_NODE) as qmp:  # as qm resize does
        qmp.execute("block_resize", {"node-name": top, "size": 4 * 2**40})

    line = agent_b.wait_for("VM 302: scsi0: ", after=seen)
    assert "qcow2 cache cache-size 640 MiB applied live" in line
    assert_grown(pid, before, AUTO_4T - AUTO_1T)
    assert_qemu_runs_the_recorded_nodes(nodes, 302, OTHER_NODE, [{"cache-size": AUTO_4T}])


def rebuild_like_qemu_server(cluster: Cluster, vmid: int, node: str) -> None:
    """What a snapshot operation of qemu-server does to a disk's nodes: a new backing node
    under its own name, and the top reopened onto it with the options it generates from
    the config (no cache)."""
    config = cluster.a.config_path(vmid, node).read_text()
    text = next(line.split(": ", 1)[1] for line in config.splitlines() if line.startswith("scsi0:"))
    storage = parse_storage_cfg((cluster.a.pve / "storage.cfg").read_text(), config_dir=cluster.a.pve)
    top = format_node(resolve_disk(parse_drive("scsi0", text).drive, storage),
                      explicit_backing=True, tools=Tools())
    backing = {**top["backing"], "node-name": "fsnapshotrebuilt"}
    backing["file"] = {**backing["file"], "node-name": "esnapshotrebuilt"}
    with cluster.qmp(vmid, node) as qmp:
        qmp.execute("blockdev-add", backing)
        qmp.execute("blockdev-reopen", {"options": [{**reopen_options(top),
                                                     "backing": "fsnapshotrebuilt"}]})


def test_nodes_replaced_over_qmp_get_their_cache_again(cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    shared_vm(nodes, 303, OTHER_NODE, "4T", backing=True)
    nodes.write_settings(303, "scsi0: qcow2-cache-size-based-on-disk=1\n")
    pid = nodes.start_vm(303, OTHER_NODE)
    agent_b = nodes.start_agent(OTHER_NODE)
    agent_b.wait_for("base-303.qcow2: qcow2 cache cache-size 640 MiB applied live")
    tuned = vm_size(pid)
    [added] = nodes.record(303, OTHER_NODE)["disks"]["scsi0"]["added"]
    seen = len(agent_b.lines())

    rebuild_like_qemu_server(nodes, 303, OTHER_NODE)
    # The top's cache is QEMU's default again, the rebuilt base node has QEMU's default.
    assert_grown(pid, tuned, 2 * DEFAULT_L2 - AUTO_4T)

    agent_b.wait_for("scsi0: the nodes qdisk tuned were replaced since", after=seen)
    agent_b.wait_for(f"scsi0: node {added} that qdisk had added is no longer used: deleted",
                     after=seen)
    # Top and rebuilt base at their auto sizes; the node qdisk had added is gone with its
    # cache: the address space is what it was once tuned (QEMU 10.0 gives back exactly
    # that; 7.2 kept about 30 MiB more here, within the noise).
    assert_grown(pid, tuned, 0)
    assert_qemu_runs_the_recorded_nodes(nodes, 303, OTHER_NODE, [{"cache-size": AUTO_4T}] * 2)
    assert nodes.record(303, OTHER_NODE)["disks"]["scsi0"]["chain"][1]["node-name"] == \
        "fsnapshotrebuilt"


def test_the_hookscript_and_the_agent_do_not_fight(cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    shared_vm(nodes, 304, OTHER_NODE, "1T")
    shared_vm(nodes, 305, OTHER_NODE, "1T")  # its twin without settings
    nodes.write_settings(304, "scsi0: qcow2-cache-size-based-on-disk=1\n")
    agent_b = nodes.start_agent(OTHER_NODE)
    pid, twin = nodes.start_vm(304, OTHER_NODE), nodes.start_vm(305, OTHER_NODE)

    hooked = nodes.qdisk(OTHER_NODE, "pve", "hook", "304", "post-start")  # qemu-server's call

    assert hooked.returncode == 0 and hooked.stderr == "", hooked.stderr
    time.sleep(3 * INTERVAL)
    agent_lines = [line for line in agent_b.lines() if "VM 304" in line]
    # Whichever came first applied; the other found QEMU had it.
    assert (hooked.stdout + "\n".join(agent_lines)).count("applied live") == 1, \
        (hooked.stdout, agent_lines)
    assert all("applied live" in line for line in agent_lines)
    assert AUTO_1T - DEFAULT_L2 - NOISE < vm_size(pid) - vm_size(twin) < AUTO_1T - DEFAULT_L2 + NOISE
    assert_qemu_runs_the_recorded_nodes(nodes, 304, OTHER_NODE, [{"cache-size": AUTO_1T}])


def test_a_vm_live_migrated_from_a_to_b_gets_its_cache_once_it_arrived(
        cluster: tuple[Cluster, Prober], tmp_path: Path) -> None:
    nodes, _prober = cluster
    shared_vm(nodes, 306, THIS_NODE, "1T")
    nodes.write_settings(306, "scsi0: qcow2-cache-size-based-on-disk=1\n")
    agent_a, agent_b = nodes.start_agent(THIS_NODE), nodes.start_agent(OTHER_NODE)
    source = nodes.start_vm(306, THIS_NODE)
    agent_a.wait_for("VM 306: scsi0: ")
    # As qm migrate --online: the config locked, QEMU started on B waiting for the state.
    config = nodes.a.config_path(306)
    config.write_text(config.read_text() + "lock: migrate\n")
    channel = tmp_path / "migration.sock"
    target = nodes.a.start(306, node=THIS_NODE, run_dir=nodes.b_run_dir,
                           extra=("-incoming", f"unix:{channel}"))
    before = vm_size(target)
    agent_b.wait_for("VM 306: locked (migrate)")
    with nodes.qmp(306, THIS_NODE) as qmp:
        qmp.execute("migrate", {"uri": f"unix:{channel}"})
        deadline = time.monotonic() + 60
        while (status := qmp.execute("query-migrate").get("status")) != "completed":
            assert status not in ("failed", "cancelled") and time.monotonic() < deadline, status
            time.sleep(0.05)
    with nodes.qmp(306, OTHER_NODE) as qmp:
        qmp.execute("cont")
    # The config moves to B unlocked, the source QEMU ends.
    moved = nodes.a.config_path(306, OTHER_NODE)
    moved.write_text(config.read_text().replace("lock: migrate\n", ""))
    config.unlink()
    kill_and_wait(source)

    line = agent_b.wait_for("VM 306: scsi0: ")

    assert "qcow2 cache cache-size 160 MiB applied live" in line
    assert_grown(target, before, AUTO_1T - DEFAULT_L2)
    assert_qemu_runs_the_recorded_nodes(nodes, 306, OTHER_NODE, [{"cache-size": AUTO_1T}])

"""The node agent's faults on two simulated nodes (:mod:`agent_helpers`): what it must
leave alone and retry (a lock, a block job), a damaged settings file, pmxcfs missing or
read-only, a QEMU that dies mid-session, the agent killed and restarted, SIGTERM. It
never exits on a VM's problem and logs each problem once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_helpers import GREETING_BOUND, INTERVAL, Cluster, Prober, two_nodes

from pve_helpers import MIB, NOISE, OTHER_NODE, vm_size
from qemu_helpers import kill_and_wait

pytestmark = pytest.mark.qemu

DEFAULT_L2 = 32 * MIB
L2_SETTING = "scsi0: qcow2-l2-cache-size=256\n"
# 256 MiB of L2 instead of QEMU's 32 MiB.
L2_GROWTH = 256 * MIB - DEFAULT_L2


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Prober]]:
    with two_nodes(tmp_path) as nodes:
        yield nodes
    _cluster, prober = nodes
    assert not prober.failures, prober.failures
    assert prober.longest < GREETING_BOUND, f"a second client waited {prober.longest:.2f} s"


def vm_on_b(nodes: Cluster, vmid: int, *, lock: str | None = None) -> int:
    nodes.a.image("srv/shared", vmid, f"vm-{vmid}-disk-0.qcow2", "4T")
    nodes.a.write_vm(vmid, {"memory": "32", "scsihw": "virtio-scsi-single",
                            "scsi0": f"shared:{vmid}/vm-{vmid}-disk-0.qcow2,size=4T",
                            **({"lock": lock} if lock else {})}, node=OTHER_NODE)
    return nodes.start_vm(vmid, OTHER_NODE)


def grown(pid: int, before: int) -> int:
    return vm_size(pid) - before


def assert_grown(pid: int, before: int, expected: int) -> None:
    assert expected - NOISE < grown(pid, before) < expected + NOISE, \
        f"grown by {grown(pid, before) / MIB:.0f} MiB, expected {expected / MIB:.0f} MiB"


def test_a_lock_a_block_job_and_a_damaged_settings_file_are_left_alone_and_retried(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    locked = vm_on_b(nodes, 320, lock="backup")
    busy = vm_on_b(nodes, 321)
    damaged = vm_on_b(nodes, 322)
    before = {pid: vm_size(pid) for pid in (locked, busy, damaged)}
    with nodes.qmp(321, OTHER_NODE) as qmp:  # a backup job that runs until cancelled
        qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "target",
                                     "size": 4 * 2**40})
        qmp.execute("blockdev-backup", {"device": "drive-scsi0", "target": "target",
                                        "sync": "full", "speed": 1, "job-id": "backup1"})
    for vmid in (320, 321):
        nodes.write_settings(vmid, L2_SETTING)
    nodes.write_settings(322, "scsi0: qcow2-l2-cache-size=banana\n")
    agent = nodes.start_agent(OTHER_NODE)

    agent.wait_for("VM 320: locked (backup): Proxmox VE is in the middle of an operation")
    agent.wait_for("VM 321: a block job is running (backup job on backup1); left alone, retried")
    damaged_line = agent.wait_for("VM 322: settings not applied: ")
    assert "line 1: scsi0.qcow2-l2-cache-size" in damaged_line
    time.sleep(3 * INTERVAL)  # cycles go on: each problem is logged once, nothing changes
    for vmid in (320, 321, 322):
        assert sum(f"VM {vmid}:" in line for line in agent.lines()) == 1, agent.lines()
    assert all(grown(pid, size) < NOISE for pid, size in before.items())
    audit = nodes.qdisk(OTHER_NODE, "pve", "audit", "--all-nodes").stdout
    assert "  settings: pending on pve2: locked (backup)" in audit.split("VM 320")[1]
    failing = audit.split("VM 322")[1].splitlines()[1]
    assert failing.startswith("  settings: failing on pve2: ") and "got 'banana'" in failing

    # The lock goes, the job ends, the file is fixed: each VM gets its cache.
    nodes.a.config_path(320, OTHER_NODE).write_text(
        nodes.a.config_path(320, OTHER_NODE).read_text().replace("lock: backup\n", ""))
    with nodes.qmp(321, OTHER_NODE) as qmp:
        qmp.execute("block-job-cancel", {"device": "backup1", "force": True})
    nodes.write_settings(322, L2_SETTING)
    for vmid in (320, 321, 322):
        agent.wait_for(f"VM {vmid}: scsi0: ")
    for pid in (locked, busy, damaged):
        assert_grown(pid, before[pid], L2_GROWTH)
    assert agent.process.poll() is None


def test_pmxcfs_missing_then_back(cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    pid = vm_on_b(nodes, 323)
    before = vm_size(pid)
    agent = nodes.start_agent(OTHER_NODE)
    link = nodes.b_root / "etc" / "pve"
    link.unlink()
    agent.wait_for("etc/pve/nodes is missing (pmxcfs not mounted?)")
    nodes.write_settings(323, L2_SETTING)  # on node A
    time.sleep(2 * INTERVAL)
    assert grown(pid, before) < NOISE
    link.symlink_to(nodes.a.pve)
    agent.wait_for("cluster file system: resolved")
    agent.wait_for("VM 323: scsi0: ")
    assert_grown(pid, before, L2_GROWTH)


def test_pmxcfs_read_only_the_vm_gets_its_cache_and_the_record_follows_once_writable(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    pid = vm_on_b(nodes, 324)
    before = vm_size(pid)
    mount_point = nodes.b_root / "etc" / "pve"
    mount_point.unlink()
    mount_point.mkdir()
    # Node B's view of pmxcfs read-only (no quorum), in a mount namespace of the agent's own.
    agent = nodes.start_agent(OTHER_NODE, wrapper=(
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f'mount --bind -o ro "{nodes.a.pve}" "{mount_point}" && exec "$@"', "sh"))
    nodes.write_settings(324, L2_SETTING)  # on node A, which has quorum

    agent.wait_for("VM 324: scsi0: ")
    problem = agent.wait_for("node status: not recorded on the cluster file system: ")
    assert "Read-only file system" in problem
    assert_grown(pid, before, L2_GROWTH)
    assert not (nodes.a.pve / "qdisk" / "nodes" / "pve2.json").exists()

    subprocess.run(["nsenter", "-t", str(agent.process.pid), "-m", "mount", "-o",
                    "remount,bind,rw", str(mount_point)], check=True, timeout=30)
    agent.wait_for("node status: resolved")
    assert nodes.node_status(OTHER_NODE)["vms"]["324"]["disks"]["scsi0"]["settings"] == \
        "qcow2-l2-cache-size=256"


def test_a_qemu_dying_mid_session_and_sigterm_while_the_agent_waits_for_qemu(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, prober = cluster
    dying = vm_on_b(nodes, 325)
    other = vm_on_b(nodes, 326)
    stalled = vm_on_b(nodes, 327)
    agent = nodes.start_agent(OTHER_NODE)
    # QEMU stopped: the agent's session waits for its greeting; then QEMU is killed.
    prober.ignored |= {nodes.b_run_dir / "325.qmp", nodes.b_run_dir / "327.qmp"}
    os.kill(dying, signal.SIGSTOP)
    nodes.write_settings(325, L2_SETTING)
    time.sleep(2 * INTERVAL)
    kill_and_wait(dying)
    agent.wait_for("VM 325: scsi0: cannot connect to QEMU's monitor at ")
    before = vm_size(other)
    nodes.write_settings(326, L2_SETTING)
    agent.wait_for("VM 326: scsi0: ")
    assert_grown(other, before, L2_GROWTH)

    # Stuck on a QEMU that does not answer, SIGTERM ends the agent within a second.
    os.kill(stalled, signal.SIGSTOP)
    nodes.write_settings(327, L2_SETTING)
    time.sleep(2 * INTERVAL)
    took = agent.stop()
    assert took < 1.0, f"SIGTERM took {took:.2f} s"
    assert agent.process.returncode == 0
    assert agent.lines()[-1] == "qdisk agent on node pve2: stopped (SIGTERM)"


def test_the_agent_killed_and_restarted_takes_up_where_it_was(
        cluster: tuple[Cluster, Prober]) -> None:
    nodes, _prober = cluster
    changed, unchanged = vm_on_b(nodes, 328), vm_on_b(nodes, 329)
    before = {pid: vm_size(pid) for pid in (changed, unchanged)}
    for vmid in (328, 329):
        nodes.write_settings(vmid, L2_SETTING)
    first = nodes.start_agent(OTHER_NODE)
    first.wait_for("VM 328: scsi0: ")
    first.wait_for("VM 329: scsi0: ")
    second = nodes.qdisk(OTHER_NODE, "pve", "agent", "--once")
    assert second.returncode == 2 and "another qdisk agent runs on node pve2" in second.stderr
    first.process.kill()
    first.process.wait(timeout=10)
    leftover = nodes.a.pve / "qdisk" / "nodes" / "pve2.json.tmp.4242"
    leftover.write_text("{")  # a write the killed agent did not finish
    nodes.write_settings(328, "scsi0: qcow2-l2-cache-size=512\n")

    again = nodes.start_agent(OTHER_NODE)

    line = again.wait_for("VM 328: scsi0: ")
    assert "l2-cache-size 512 MiB applied live" in line
    time.sleep(2 * INTERVAL)
    # VM 329's record says QEMU has its settings: not even asked.
    assert not any("VM 329" in text for text in again.lines()), again.lines()
    assert not leftover.exists()
    assert_grown(changed, before[changed], 512 * MIB - DEFAULT_L2)
    assert_grown(unchanged, before[unchanged], L2_GROWTH)

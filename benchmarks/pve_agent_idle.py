"""The CPU time of `qdisk pve agent`'s idle cycle, per running VM and per configured VM.

Run with `.venv/bin/python benchmarks/pve_agent_idle.py`. A simulated host (the test
area's tree: storage.cfg, VM configs on pmxcfs's paths, qemu-server's run directory)
gets 1,000 configured VMs with two qcow2 disks and stored settings each (half sized from
the image, half explicit); 20 of them run in real QEMUs started with qemu-server's
arguments. The agent runs in this process: its first cycle gives the 20 VMs their
caches; then idle cycles (nothing changed) are timed with the process's CPU clock
(QEMU's own CPU is not counted). The same is measured with 100 configured VMs and with
10 running, which gives the cost per configured and per running VM. A cycle in which
every running VM's node names are due a confirmation (one QMP session each) is timed
too: its wall time per VM bounds how long the agent holds a VM's monitor.

Target: an idle cycle over 1,000 configured VMs with 20 running below 50 ms of CPU.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent.parent / "tests"),
                str(Path(__file__).parent.parent / "tests" / "pve")]

from qdisk.pve import apply  # noqa: E402
from qdisk.pve.agent import Agent  # noqa: E402
from qdisk.pve.host import PveHost  # noqa: E402
from qdisk.qemu.qmp import QmpConnection  # noqa: E402

from pve_helpers import THIS_NODE, PveTree  # noqa: E402
from qemu_helpers import kill_and_wait  # noqa: E402

CONFIGURED = 1000
FEWER_CONFIGURED = 100
RUNNING = 20
FEWER_RUNNING = 10
IDLE_CYCLES = 200
LIMIT_SECONDS = 0.050
FIRST_VMID = 1000


def make_host(root: Path) -> PveTree:
    tree = PveTree(root)
    (tree.pve / "nodes" / THIS_NODE / "qemu-server").mkdir(parents=True)
    (tree.pve / "qdisk").mkdir()
    (tree.pve / "storage.cfg").write_text(
        f"dir: local\n\tpath {root}/var/lib/vz\n\tcontent images\n")
    templates = [tree.image("var/lib/vz", 0, name, size)
                 for name, size in (("system.qcow2", "32G"), ("data.qcow2", "1T"))]
    blobs = [template.read_bytes() for template in templates]
    for vmid in range(FIRST_VMID, FIRST_VMID + CONFIGURED):
        directory = root / "var" / "lib" / "vz" / "images" / str(vmid)
        directory.mkdir(parents=True)
        disks = {}
        for number, (blob, size) in enumerate(zip(blobs, ("32G", "1T"))):
            name = f"vm-{vmid}-disk-{number}.qcow2"
            (directory / name).write_bytes(blob)
            disks[f"scsi{number}"] = f"local:{vmid}/{name},iothread=1,size={size}"
        tree.write_vm(vmid, {"memory": "32", "scsihw": "virtio-scsi-single", **disks})
        tree.settings_path(vmid).write_text("scsi0: qcow2-l2-cache-size=4\n"
                                            "scsi1: qcow2-cache-size-based-on-disk=1\n")
    return tree


def idle_cpu(agent: Agent) -> float:
    """The median CPU seconds of an idle cycle."""
    samples = []
    for _ in range(IDLE_CYCLES):
        start = time.process_time()
        agent.cycle()
        samples.append(time.process_time() - start)
    return statistics.median(samples)


@contextlib.contextmanager
def timed_sessions(held: list[float]) -> Iterator[None]:
    """Each QMP session's length (connected to closed) into ``held``."""
    session = apply.qmp_session

    @contextlib.contextmanager
    def timed(socket: Path, **options: float) -> Iterator[QmpConnection]:
        with session(socket, **options) as qmp:
            start = time.perf_counter()
            try:
                yield qmp
            finally:
                held.append(time.perf_counter() - start)

    apply.qmp_session = timed  # type: ignore[assignment]
    try:
        yield
    finally:
        apply.qmp_session = session  # type: ignore[assignment]


def stop_vms(tree: PveTree, agent: Agent, left: int) -> float:
    """Stop the running VMs but ``left`` (QEMU killed, its run files gone, as after a
    stop), and measure again."""
    for pid in tree.started[left:]:
        kill_and_wait(pid)
    for vmid in range(FIRST_VMID + left, FIRST_VMID + RUNNING):
        for suffix in ("pid", "qmp"):
            (tree.run_dir / f"{vmid}.{suffix}").unlink(missing_ok=True)
    del tree.started[left:]
    agent.cycle()  # forgets the stopped VMs
    return idle_cpu(agent)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="qdisk-bench-agent-") as directory:
        tree = make_host(Path(directory))
        try:
            return measure(tree)
        finally:
            tree.kill_all()


def measure(tree: PveTree) -> int:
    started = time.perf_counter()
    running = list(range(FIRST_VMID, FIRST_VMID + RUNNING))
    for vmid in running:
        tree.start(vmid)
    print(f"{RUNNING} QEMUs started in {time.perf_counter() - started:.1f} s", flush=True)
    host = PveHost.from_env({"QDISK_PVE_ROOT": str(tree.root), "QDISK_PVE_NODE": THIS_NODE})
    log: list[str] = []
    agent = Agent(host, log.append, confirm_interval=float("inf"))
    agent.start()
    start = time.process_time()
    agent.cycle()
    first = time.process_time() - start
    applied = sum("applied live" in line for line in log)
    assert applied == 2 * RUNNING, log
    agent.cycle()
    assert len(log) == applied, log[applied:]  # nothing more to do

    full = idle_cpu(agent)
    confirm = Agent(host, log.append, confirm_interval=0.0)
    confirm.start()
    confirm.cycle()  # learns the VMs (in sync: no session)
    held: list[float] = []
    wall, cpu = time.perf_counter(), time.process_time()
    with timed_sessions(held):
        confirm.cycle()  # every VM due: one session each
    confirm_wall, confirm_cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(held) == RUNNING, held
    assert len(log) == applied, log[applied:]  # confirmed, nothing changed

    for vmid in range(FIRST_VMID + RUNNING, FIRST_VMID + CONFIGURED - FEWER_CONFIGURED + RUNNING):
        tree.config_path(vmid).unlink()
        tree.settings_path(vmid).unlink()
    fewer_configured = idle_cpu(agent)
    fewer_running = stop_vms(tree, agent, FEWER_RUNNING)
    none_running = stop_vms(tree, agent, 0)

    per_running = (fewer_configured - none_running) / RUNNING
    per_configured = (full - fewer_configured) / (CONFIGURED - FEWER_CONFIGURED)
    print(f"first cycle (applies {2 * RUNNING} disks' caches over QMP): {first * 1e3:.0f} ms CPU")
    print(f"idle cycle, {CONFIGURED} configured VMs, {RUNNING} running: {full * 1e3:.2f} ms CPU "
          f"(median of {IDLE_CYCLES})")
    print(f"idle cycle, {FEWER_CONFIGURED} configured, {RUNNING} running: "
          f"{fewer_configured * 1e3:.2f} ms; {FEWER_RUNNING} running: {fewer_running * 1e3:.2f} ms; "
          f"none running: {none_running * 1e3:.2f} ms")
    print(f"per running VM: {per_running * 1e6:.0f} us CPU; per configured VM: "
          f"{per_configured * 1e6:.2f} us CPU")
    print(f"confirmation of node names (one QMP session per running VM): "
          f"{confirm_cpu / RUNNING * 1e3:.1f} ms CPU and {confirm_wall / RUNNING * 1e3:.1f} ms "
          f"wall per VM; the monitor held {statistics.median(held) * 1e3:.1f} ms median, "
          f"{max(held) * 1e3:.1f} ms at most (greeting to close)")
    print(f"target: idle cycle below {LIMIT_SECONDS * 1e3:.0f} ms CPU: "
          f"{'met' if full < LIMIT_SECONDS else 'NOT met'}")
    return 0 if full < LIMIT_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())

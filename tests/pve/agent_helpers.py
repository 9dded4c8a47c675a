"""Two Proxmox VE nodes simulated on one machine for the node agent's tests: node A's root
holds the cluster file system (``etc/pve``), node B's root links its ``etc/pve`` to it
(both see every write at once, as pmxcfs replicates), each root has its own
``var/run`` (its QEMUs, its agent's record). Agents run as real ``qdisk pve agent``
processes; a prober connects to every QMP socket of both nodes all along, as
qemu-server's status poller would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdisk.qemu.qmp import QmpConnection
from qdisk.system.processes import alive

from pve_helpers import THIS_NODE, PveTree, make_tree

# The agents' cycle in these tests, and how often they confirm node names.
INTERVAL = 1.0
CONFIRM_INTERVAL = 3.0
# Bounds of the waits (a loaded 2-core machine runs QEMU under TCG).
LOG_WAIT = 30.0
STOP_WAIT = 10.0
# How long a second client may wait for QEMU's greeting while an agent holds the monitor.
GREETING_BOUND = 2.0
_QDISK = [sys.executable, "-c", "import sys; from qdisk.cli import main; sys.exit(main())"]


@dataclass
class Agent:
    """A running ``qdisk pve agent``; its stdout goes to ``log``."""

    node: str
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def wait_for(self, text: str, *, after: int = 0, timeout: float = LOG_WAIT) -> str:
        """The first line from line ``after`` on that contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines()[after:] if text in line]
            if found:
                return found[0]
            assert self.process.poll() is None, f"agent {self.node} exited:\n" + "\n".join(self.lines())
            assert time.monotonic() < deadline, \
                f"agent {self.node}: no '{text}' within {timeout:g} s:\n" + "\n".join(self.lines())
            time.sleep(0.05)

    def stop(self) -> float:
        """SIGTERM; how long it took to end (killed, and the time past the bound, if it did not)."""
        if self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_WAIT)
        return time.monotonic() - started


@dataclass
class Prober:
    """A second client on every QMP socket of the given run directories, all along: the
    longest wait for QEMU's greeting, and connections that got none."""

    run_dirs: tuple[Path, ...]
    # Sockets of QEMUs a test stops (SIGSTOP) on purpose: no greeting expected there.
    ignored: set[Path] = field(default_factory=set)
    longest: float = 0.0
    failures: list[str] = field(default_factory=list)
    count: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for run_dir in self.run_dirs:
                for path in sorted(run_dir.glob("*.qmp")):
                    if path not in self.ignored:
                        self._probe(path)

    def _probe(self, path: Path) -> None:
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(GREETING_BOUND * 5)
            try:
                client.connect(str(path))
            except OSError:
                return  # the VM is gone (a stale socket)
            try:
                greeting = client.recv(4096)
            except OSError as error:
                if path not in self.ignored and _qemu_lives(path):
                    self.failures.append(f"{path}: {error}")
                return
        waited = time.monotonic() - started
        if greeting:  # empty: QEMU exited meanwhile
            self.count += 1
            self.longest = max(self.longest, waited)


def _qemu_lives(qmp_socket: Path) -> bool:
    """Whether the QEMU of a VM's QMP socket still runs (a test may kill it any time)."""
    try:
        return alive(int(qmp_socket.with_suffix(".pid").read_text()))
    except (OSError, ValueError):
        return False


@dataclass
class Cluster:
    """Node A (``a``, pve1) and node B (``b``, pve2), and the agents and QEMUs started."""

    a: PveTree
    b_root: Path
    agents: list[Agent] = field(default_factory=list)

    @property
    def b_run_dir(self) -> Path:
        return self.b_root / "var" / "run" / "qemu-server"

    def root(self, node: str) -> Path:
        return self.a.root if node == THIS_NODE else self.b_root

    def run_dir(self, node: str) -> Path:
        return self.a.run_dir if node == THIS_NODE else self.b_run_dir

    def env(self, node: str) -> dict[str, str]:
        return {**os.environ, "QDISK_PVE_ROOT": str(self.root(node)), "QDISK_PVE_NODE": node}

    def start_vm(self, vmid: int, node: str) -> int:
        """QEMU for the VM whose config is in ``node``'s directory, on that node."""
        return self.a.start(vmid, node=node, run_dir=self.run_dir(node))

    def qmp(self, vmid: int, node: str) -> QmpConnection:
        return self.a.qmp(vmid, self.run_dir(node))

    def start_agent(self, node: str, *, wrapper: tuple[str, ...] = ()) -> Agent:
        """``wrapper``: a command line that ends by running the agent's (its arguments)."""
        log = self.a.root.parent / f"agent-{node}-{len(self.agents)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*wrapper, *_QDISK, "pve", "agent", "--interval", str(INTERVAL),
                 "--confirm-interval", str(CONFIRM_INTERVAL)], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env(node))
        agent = Agent(node, process, log)
        self.agents.append(agent)
        agent.wait_for("qdisk agent on node")
        return agent

    def qdisk(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_QDISK, *args], capture_output=True, text=True,
                              env=self.env(node), timeout=120)

    def record(self, vmid: int, node: str) -> dict[str, Any]:
        path = self.root(node) / "var" / "run" / "qdisk" / f"{vmid}.state.json"
        return dict(json.loads(path.read_text()))

    def node_status(self, node: str) -> dict[str, Any]:
        path = self.a.pve / "qdisk" / "nodes" / f"{node}.json"
        return dict(json.loads(path.read_text()))

    def write_settings(self, vmid: int, text: str) -> None:
        path = self.a.settings_path(vmid)
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_name(path.name + ".new")
        temporary.write_text(text)
        temporary.rename(path)  # as pmxcfs writers do


@contextlib.contextmanager
def two_nodes(tmp_path: Path) -> Iterator[tuple[Cluster, Prober]]:
    """The cluster, a prober on every QMP socket; everything stopped at the end, the
    agents first (each must end within a second of SIGTERM)."""
    a = make_tree(tmp_path / "a")
    b_root = tmp_path / "b"
    (b_root / "etc").mkdir(parents=True)
    (b_root / "etc" / "pve").symlink_to(a.pve)
    cluster = Cluster(a, b_root)
    cluster.b_run_dir.mkdir(parents=True)
    prober = Prober((a.run_dir, cluster.b_run_dir))
    a.run_dir.mkdir(parents=True, exist_ok=True)
    prober.start()
    stopping: list[float] = []
    try:
        yield cluster, prober
    finally:
        try:
            stopping = [agent.stop() for agent in cluster.agents]
        finally:
            prober.stop()
            a.kill_all()
    assert all(took < 1.0 for took in stopping), f"SIGTERM took {stopping} s"

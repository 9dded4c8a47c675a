"""qemu-storage-daemon (or a VM's process without guest) serving one node graph as an NBD
export on a unix socket."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from qdisk.errors import ToolError
from qdisk.qemu.blockdev import to_json
from qdisk.qemu.qmp import QmpConnection
from qdisk.qemuopts import escape
from qdisk.system import fileio
from qdisk.system.tools import last_message, process_memory

log = logging.getLogger(__name__)

EXPORT_NAME = "disk"
QMP_CHARDEV = "qmp0"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def daemon_argv(program: str, objects: Sequence[Mapping[str, Any]],
                blockdevs: Sequence[Mapping[str, Any]], top_node: str,
                socket: Path, pidfile: Path, *, writable: bool = False,
                qmp_socket: Path | None = None) -> list[str]:
    """The daemon's command: objects and nodes rendered as for QEMU, the top node exported
    (read-only unless ``writable``), and a QMP monitor on ``qmp_socket`` if given."""
    argv = [program, *_node_arguments("--", objects, blockdevs)]
    argv += [
        "--nbd-server", json.dumps({"addr": {"type": "unix", "path": str(socket)}}),
        "--export", json.dumps(_export(top_node, writable)),
        "--pidfile", str(pidfile),
    ]
    if qmp_socket is not None:
        argv += ["--chardev", _qmp_chardev(qmp_socket), "--monitor", f"chardev={QMP_CHARDEV}"]
    return argv


def emulator_argv(program: str, objects: Sequence[Mapping[str, Any]],
                  blockdevs: Sequence[Mapping[str, Any]], pidfile: Path, qmp_socket: Path) -> list[str]:
    """A VM's process without guest (``-machine none``): the nodes as ``-blockdev``, a QMP
    monitor (the NBD export is added through it)."""
    return [program, "-machine", "none", "-nodefaults", "-display", "none",
            *_node_arguments("-", objects, blockdevs),
            "-chardev", _qmp_chardev(qmp_socket), "-mon", f"chardev={QMP_CHARDEV},mode=control",
            "-pidfile", str(pidfile)]


def _node_arguments(dash: str, objects: Sequence[Mapping[str, Any]],
                    blockdevs: Sequence[Mapping[str, Any]]) -> list[str]:
    argv = []
    for obj in objects:
        argv += [f"{dash}object", to_json(obj)]
    for node in blockdevs:
        argv += [f"{dash}blockdev", to_json(node)]
    return argv


def _export(top_node: str, writable: bool) -> dict[str, Any]:
    return {"type": "nbd", "id": "export0", "node-name": top_node, "name": EXPORT_NAME, "writable": writable}


def _qmp_chardev(path: Path) -> str:
    # QEMU's option syntax: a comma in the path is doubled.
    return f"socket,id={QMP_CHARDEV},path={escape(str(path))},server=on,wait=off"


class StorageDaemon:
    """A running qemu-storage-daemon; a context manager that always kills and reaps it.

    Ready once its pidfile exists: the daemon writes it after it has opened every
    node and started the export. With ``monitor``, QMP listens on :attr:`qmp_socket`.
    """

    def __init__(self, program: str, objects: Sequence[Mapping[str, Any]],
                 blockdevs: Sequence[Mapping[str, Any]], top_node: str, workdir: Path, *,
                 writable: bool = False, monitor: bool = False) -> None:
        self.program = program
        self.socket = workdir / "nbd.sock"
        self.qmp_socket = workdir / "qmp.sock"
        self._pidfile = workdir / "qsd.pid"
        self._stderr_path = workdir / "qsd.stderr"
        self._argv = self._command(objects, blockdevs, top_node, writable=writable, monitor=monitor)
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self, objects: Sequence[Mapping[str, Any]], blockdevs: Sequence[Mapping[str, Any]],
                 top_node: str, *, writable: bool, monitor: bool) -> list[str]:
        return daemon_argv(self.program, objects, blockdevs, top_node, self.socket, self._pidfile,
                           writable=writable, qmp_socket=self.qmp_socket if monitor else None)

    def __enter__(self) -> StorageDaemon:
        log.debug("starting %s", " ".join(self._argv))
        for stale in (self.socket, self.qmp_socket, self._pidfile):
            stale.unlink(missing_ok=True)
        try:
            with fileio.truncated_output(self._stderr_path, home=self._stderr_path.parent) as stderr:
                self._process = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=stderr)
        except FileNotFoundError:
            raise ToolError(self.program, "program not found (install it, or set its QDISK_* path)") from None
        try:
            self._wait_ready()
            self._started()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the daemon is not running")
        return self._process.pid

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._process.poll() is not None:
                raise ToolError(self.program, self._error_text() or "exited at start",
                                returncode=self._process.returncode,
                                stderr=self._stderr_path.read_text(errors="replace"))
            if time.monotonic() > deadline:
                raise ToolError(self.program, f"not ready within {START_TIMEOUT:g} s")
            time.sleep(0.02)

    def _ready(self) -> bool:
        return self._pidfile.exists()

    def _started(self) -> None:
        """What follows the start before the export serves (nothing: the daemon's own
        arguments start it)."""

    def _error_text(self) -> str:
        return last_message(self._stderr_path.read_text(errors="replace"))

    def rss_bytes(self) -> int:
        """The daemon's resident memory (VmRSS)."""
        rss = process_memory(self.pid).get("VmRSS")
        if rss is None:
            raise ToolError(self.program, "no VmRSS in /proc status")
        return rss

    def stop(self) -> None:
        """Terminate the daemon (kill it if it lingers) and reap it; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.debug("daemon %d exited with %s", process.pid, process.returncode)


class EmulatorDaemon(StorageDaemon):
    """The same node graph served by a VM's process: ``qemu-system`` without guest or CPU,
    exporting the top node over NBD through QMP (``nbd-server-start``, ``block-export-add``).

    Why not qemu-storage-daemon: it never enables QEMU's virtual clock, and qcow2's
    cache-clean timer runs on that clock, so ``cache-clean-interval`` never frees anything
    there (QEMU 7.2). A VM's process runs the clock while the VM runs.
    """

    def __init__(self, program: str, objects: Sequence[Mapping[str, Any]],
                 blockdevs: Sequence[Mapping[str, Any]], top_node: str, workdir: Path) -> None:
        self._top_node = top_node
        super().__init__(program, objects, blockdevs, top_node, workdir, monitor=True)

    def _command(self, objects: Sequence[Mapping[str, Any]], blockdevs: Sequence[Mapping[str, Any]],
                 top_node: str, *, writable: bool, monitor: bool) -> list[str]:
        return emulator_argv(self.program, objects, blockdevs, self._pidfile, self.qmp_socket)

    def _ready(self) -> bool:
        # QEMU writes its pidfile before it creates the monitor's socket.
        return self._pidfile.exists() and self.qmp_socket.exists()

    def _started(self) -> None:
        with QmpConnection(self.qmp_socket) as qmp:
            qmp.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(self.socket)}}})
            qmp.execute("block-export-add", _export(self._top_node, writable=False))

"""qemu-storage-daemon serving one node graph as an NBD export on a unix socket."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from qdisk import fileio
from qdisk.errors import ToolError
from qdisk.qemu.blockdev import to_json
from qdisk.tools import last_message, process_memory

log = logging.getLogger(__name__)

EXPORT_NAME = "disk"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def daemon_argv(program: str, objects: Sequence[Mapping[str, Any]],
                blockdevs: Sequence[Mapping[str, Any]], top_node: str,
                socket: Path, pidfile: Path) -> list[str]:
    """The daemon's command: objects and nodes rendered as for QEMU, the top node exported read-only."""
    argv = [program]
    for obj in objects:
        argv += ["--object", to_json(obj)]
    for node in blockdevs:
        argv += ["--blockdev", to_json(node)]
    argv += [
        "--nbd-server", json.dumps({"addr": {"type": "unix", "path": str(socket)}}),
        "--export", json.dumps({"type": "nbd", "id": "export0", "node-name": top_node,
                                "name": EXPORT_NAME, "writable": False}),
        "--pidfile", str(pidfile),
    ]
    return argv


class StorageDaemon:
    """A running qemu-storage-daemon; a context manager that always kills and reaps it.

    Ready once its pidfile exists: the daemon writes it after it has opened every
    node and started the export.
    """

    def __init__(self, program: str, objects: Sequence[Mapping[str, Any]],
                 blockdevs: Sequence[Mapping[str, Any]], top_node: str, workdir: Path) -> None:
        self.program = program
        self.socket = workdir / "nbd.sock"
        self._pidfile = workdir / "qsd.pid"
        self._stderr_path = workdir / "qsd.stderr"
        self._argv = daemon_argv(program, objects, blockdevs, top_node, self.socket, self._pidfile)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StorageDaemon:
        log.debug("starting %s", " ".join(self._argv))
        for stale in (self.socket, self._pidfile):
            stale.unlink(missing_ok=True)
        try:
            with fileio.truncated_output(self._stderr_path, home=self._stderr_path.parent) as stderr:
                self._process = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=stderr)
        except FileNotFoundError:
            raise ToolError(self.program, "program not found (install it, or set its QDISK_* path)") from None
        try:
            self._wait_ready()
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
        while not self._pidfile.exists():
            if self._process.poll() is not None:
                raise ToolError(self.program, self._error_text() or "exited at start",
                                returncode=self._process.returncode,
                                stderr=self._stderr_path.read_text(errors="replace"))
            if time.monotonic() > deadline:
                raise ToolError(self.program, f"not ready within {START_TIMEOUT:g} s")
            time.sleep(0.02)

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

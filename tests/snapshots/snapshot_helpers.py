"""Helpers of the snapshot area: homes with a ``dir`` storage (a volume chain or not), the
guest's view of a disk (patterns written through QEMU and read back through an NBD export,
or from the files of a stopped VM), whether config, files and a running QEMU agree, and
snapshot commands killed at each step."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.image.info import read_chain
from qdisk.qemu.command import build_command
from qdisk.qemu.qmp import QmpConnection
from qdisk.settings import Settings, Tools
from qdisk.system.tools import qemu_version
from qdisk.vm import changes, snapshot_journal, store
from qdisk.vm import snapshot_volumes as volume_steps
from qdisk.vm.live import initial_state
from qdisk.vm.snapshot_live import LiveDisk
from qdisk.vm.snapshot_volumes import Method, snapshot_volumes
from qdisk.vm.state import running_pid, write_state

from qemu_helpers import kill_and_wait

# The QEMU tools on PATH.
TOOLS = Tools()

VMID = 100
KIB = 1024
MIB = 2**20
CHUNK = 64 * KIB
# VmSize shows the caches only if glibc does not blur it: one malloc arena (each new
# thread would get 64 MiB), and big blocks mapped and unmapped (glibc's dynamic threshold
# would keep freed buffers of a block job in the heap).
QEMU_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
QEMU_TIMEOUT = 60
# One snapshot operation in a forked child (a second or two here, 60 s the stall bound of a
# block job).
OPERATION_TIMEOUT = 120


@dataclass(frozen=True)
class SnapshotHome:
    """A QDISK_HOME with two ``dir`` storages under ``store``: ``local`` (internal qcow2
    snapshots) and ``chain`` (``snapshot-as-volume-chain``), both thin (no preallocation)."""

    home: Path
    store: Path

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home, tools=Tools())

    def images(self, storage_id: str = "chain") -> Path:
        return self.store / storage_id / "images" / str(VMID)

    def create_vm(self, **drives: str) -> None:
        changes.create(self.settings, VMID, {"memory": "64", "scsihw": "virtio-scsi-pci", **drives})

    def config(self) -> vmconfig.VmConfig:
        return store.load(self.settings, VMID)

    def config_path(self) -> Path:
        return self.settings.layout.vm_config(VMID)

    def config_text(self) -> str:
        return self.config_path().read_text()


def make_home(root: Path) -> SnapshotHome:
    home, store = root / "home", root / "store"
    home.mkdir(parents=True)
    store.mkdir()
    (home / "storage.cfg").write_text(
        f"dir: local\n\tpath {store}/local\n\tcontent images,iso\n\tpreallocation off\n\n"
        f"dir: chain\n\tpath {store}/chain\n\tcontent images\n\tpreallocation off\n"
        "\tsnapshot-as-volume-chain 1\n")
    return SnapshotHome(home, store)


# --- the guest's view of a disk ---------------------------------------------------------------


@dataclass
class GuestData:
    """Patterns written to a disk (offset -> byte) and the checks that they read back."""

    home: SnapshotHome
    key: str = "scsi0"
    written: dict[int, int] = field(default_factory=dict)

    # A writable NBD export of a storage daemon's drive kept open (:meth:`exported`).
    url: str | None = None

    def write(self, pattern: int, offset: int) -> None:
        """Write through the running QEMU: the VM's device (HMP ``qemu-io -d``), or an NBD
        export of the drive when QEMU is a storage daemon; a stopped VM's image directly."""
        command = f"write -P {pattern:#x} {offset} {CHUNK}"
        pid = running_pid(self.home.settings, VMID)
        if self.url is not None:
            _qemu_io(["-f", "raw", self.url], [command])
        elif pid is None:
            _qemu_io(["-f", "qcow2", self._image()], [command])
        elif _is_storage_daemon(pid):
            with self.exported():
                self.write(pattern, offset)
            return
        else:
            with self._qmp() as qmp:
                qmp.execute("human-monitor-command",
                            {"command-line": f'qemu-io -d {self.key} "{command}"'})
        self.written[offset] = pattern

    def check(self, extra: dict[int, int] | None = None) -> None:
        """Every pattern written (and ``extra``) reads back as the guest sees the disk."""
        expected = {**self.written, **(extra or {})}
        commands = [f"read -P {pattern:#x} {offset} {CHUNK}" for offset, pattern in sorted(expected.items())]
        if running_pid(self.home.settings, VMID) is None:
            _qemu_io(["-r", "-f", "qcow2", self._image()], commands)
            return
        with self._export(writable=False) as url:
            _qemu_io(["-r", "-f", "raw", url], commands)

    @contextmanager
    def exported(self) -> Iterator[None]:
        """Writes go to a writable NBD export of the storage daemon's drive, which stays
        while the block (no QMP connection needed to write: one can be held elsewhere)."""
        with self._export(writable=True) as url:
            self.url = url
            try:
                yield
            finally:
                self.url = None

    def _image(self) -> str:
        drive = self.home.config().current.values[self.key]
        return storage.resolve(storage.load(self.home.settings), drive.split(",")[0]).path

    def _qmp(self) -> QmpConnection:
        return QmpConnection(self.home.settings.layout.run_files(VMID).qmp)

    @contextmanager
    def _export(self, *, writable: bool) -> Iterator[str]:
        """An NBD export of the drive's top node; the QMP connection is closed while it is
        used (QEMU serves one monitor client)."""
        socket = self.home.home / "nbd.sock"
        with self._qmp() as qmp:
            node = _top_node(qmp, self.key)
            qmp.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(socket)}}})
            qmp.execute("block-export-add", {"type": "nbd", "id": "check", "node-name": node,
                                             "name": "disk", "writable": writable})
        try:
            yield f"nbd+unix:///disk?socket={socket}"
        finally:
            if running_pid(self.home.settings, VMID) is not None:
                with self._qmp() as qmp:
                    qmp.execute("block-export-del", {"id": "check", "mode": "hard"})
                    qmp.execute("nbd-server-stop")


def _top_node(qmp: QmpConnection, key: str) -> str:
    """The node a drive's device reads: the throttle node (-blockdev) or the format node
    under the -drive's BlockBackend."""
    for block in qmp.execute("query-block"):
        if block["device"] == f"drive-{key}" or block.get("qdev", "").endswith(f"/{key}"):
            return str(block["inserted"]["node-name"])
    return f"drive-{key}"


def _qemu_io(args: list[str], commands: list[str]) -> None:
    command = ["qemu-io", *args]
    for line in commands:
        command += ["-c", line]
    result = subprocess.run(command, capture_output=True, text=True, timeout=QEMU_TIMEOUT)
    assert result.returncode == 0 and "fail" not in result.stdout.lower(), (
        f"{' '.join(command)}:\n{result.stdout}{result.stderr}")


def _is_storage_daemon(pid: int) -> bool:
    return b"qemu-storage-daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()


# --- QEMU as the VM's QEMU ----------------------------------------------------------------------


def start_storage_daemon(home: SnapshotHome, started: list[int]) -> int:
    """The VM's disks served by qemu-storage-daemon under the VM's run files (its QMP socket
    and pid file), with the nodes and state ``vm start --syntax blockdev`` gives: QEMU's
    block layer without a guest, started in milliseconds (for a QEMU killed at each step)."""
    settings = home.settings
    config = home.config()
    command = build_command(config, storage.load(settings), settings,
                            # The storage daemon's own version: its nodes as it accepts them.
                            qemu_version=lambda: qemu_version(settings.tools.qemu_storage_daemon),
                            syntax="blockdev")
    files = settings.layout.run_files(VMID)
    files.qmp.parent.mkdir(exist_ok=True)
    argv = ["qemu-storage-daemon", "--chardev", f"socket,id=qmp,path={files.qmp},server=on,wait=off",
            "--monitor", "chardev=qmp", "--pidfile", str(files.pid), "--daemonize"]
    for option, value in zip(command.argv, command.argv[1:]):
        if option in ("-object", "-blockdev") and value.startswith("{"):
            argv += [f"-{option}", value]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=QEMU_TIMEOUT)
    finally:
        if files.pid.exists():
            started.append(int(files.pid.read_text()))
    assert result.returncode == 0, result.stderr
    pid = int(files.pid.read_text())
    write_state(settings, VMID, initial_state("blockdev", command.graphs, pid))
    return pid


# --- consistency --------------------------------------------------------------------------------


def ancestry(config: vmconfig.VmConfig) -> list[str]:
    """The snapshots the current state derives from, newest first."""
    names, name = [], config.current.values.get("parent")
    while name is not None:
        names.append(name)
        name = config.snapshots[name].values.get("parent")
    return names


def assert_consistent(home: SnapshotHome) -> None:
    """No operation left half-done: no journal, no lock or snapstate, no temporary file;
    every volume chain's layers are the snapshots the config's tree derives the current
    state from, internal snapshots are the config's; a running QEMU has qdisk's node for
    every layer, each on the file its name says. (Raw disks have no snapshots.)"""
    settings = home.settings
    config = home.config()
    assert not settings.layout.snapshot_journal(VMID).exists()
    assert "lock" not in config.current.values
    assert all("snapstate" not in section.values for section in config.snapshots.values())
    assert not [path for storage_id in ("local", "chain") if home.images(storage_id).is_dir()
                for path in home.images(storage_id).iterdir() if path.name.startswith(".qdisk-")]
    storage_config = storage.load(settings)
    volumes = snapshot_volumes({key: text for key, text in config.current.values.items()
                                if ".raw" not in text}, storage_config)
    for volume in volumes:
        if volume.method is Method.CHAIN:
            files = chain_files(volume.path)
            assert [volume.layer_of(str(path)) for path in files[1:]] == ancestry(config)
        else:
            assert set(internal_names(volume.path)) == set(config.snapshots)
    pid = running_pid(settings, VMID)
    if pid is None:
        return
    with QmpConnection(settings.layout.run_files(VMID).qmp) as qmp:
        for volume in volumes:
            if volume.method is Method.CHAIN:
                live = LiveDisk(qmp, settings, volume)
                assert live.chain() == [layer["node-name"] for layer in live.layers()]
        files = {node["file"] for node in qmp.execute("query-named-block-nodes", {"flat": True})
                 if node["drv"] == "file"}
    assert files == open_images(pid)


def chain_files(path: Path) -> list[Path]:
    """The files of an image's backing chain, top first (qdisk's header reader, checked
    against qemu-img in tests/image)."""
    return [Path(image.filename) for image in read_chain(path, format="qcow2", tools=TOOLS)]


def internal_names(path: Path) -> list[str]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    return [snapshot["name"] for snapshot in info.get("snapshots", [])]


def open_images(pid: int) -> set[str]:
    """The image files a process has open, by their names now."""
    fds = Path(f"/proc/{pid}/fd")
    names = set()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith(".qcow2"):
            names.add(target)
    return names


# --- commands killed at each step --------------------------------------------------------------


def run_killed(operation: Callable[[], Any], kill_at: int, action: Callable[[], None], *,
               file_steps: bool = True) -> bool:
    """Run ``operation`` in a forked child in which ``action`` runs right after the
    ``kill_at``-th write of the snapshot journal (it is written before each step) or, with
    ``file_steps``, of the files of a volume step (qemu-img, new images, links). Returns
    whether the operation got that far; fails the test with the child's error."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without pytest's exit handlers
        os.close(reader)
        try:
            _count_steps(kill_at, lambda: (os.write(writer, b"reached\n"), action()),
                         file_steps=file_steps)
            operation()
            os.write(writer, b"done\n")
        except BaseException:  # noqa: BLE001 - the parent reports it
            os.write(writer, traceback.format_exc().encode())
        os._exit(0)
    os.close(writer)
    report = _read_until_closed(reader, pid)
    _, status = os.waitpid(pid, 0)
    reached = report.startswith("reached\n")
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL and reached, report
        return True
    assert report.endswith("done\n"), report
    return reached


def _read_until_closed(reader: int, pid: int) -> str:
    """The child's report; a child that runs past OPERATION_TIMEOUT is killed and the test
    fails (a stuck QMP wait or block job must not hang the suite)."""
    deadline = time.monotonic() + OPERATION_TIMEOUT
    chunks = []
    with os.fdopen(reader, "rb", buffering=0) as pipe:
        while select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
            if not (chunk := pipe.read(65536)):
                return b"".join(chunks).decode()
            chunks.append(chunk)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the operation ran past {OPERATION_TIMEOUT} s; it said: {b''.join(chunks).decode()}")


def _count_steps(kill_at: int, action: Callable[[], object], *, file_steps: bool) -> None:
    written = 0

    def counted(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal written
            result = function(*args, **kwargs)
            written += 1
            if written == kill_at:
                action()
            return result
        return call

    snapshot_journal.write = counted(snapshot_journal.write)  # type: ignore[assignment]
    if file_steps:
        for name in ("_qemu_img", "create_image"):
            setattr(volume_steps, name, counted(getattr(volume_steps, name)))
        os.link = counted(os.link)
        os.replace = counted(os.replace)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_qemu(home: SnapshotHome) -> Callable[[], None]:
    def kill() -> None:
        pid = running_pid(home.settings, VMID)
        assert pid is not None
        kill_and_wait(pid)
    return kill

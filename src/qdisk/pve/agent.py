"""``qdisk pve agent``: each node keeps its running VMs' qcow2 caches as their stored
settings say, without a hookscript.

Every cycle the agent looks at the VMs running on this node (qemu-server's pid files) and
gives each what it lacks, through the same reopen as ``pve set`` and ``pve apply``
(:func:`qdisk.pve.apply.apply_settings`): settings changed on any node (pmxcfs
replicated the file here), a VM that started or arrived by migration, nodes Proxmox VE
rebuilt (snapshot operations on volume chains, a moved disk), an image whose virtual size
changed (``qm resize``: the automatic size is recomputed from the image).

qemu-server talks to a VM's QMP socket one command at a time, and QEMU serves one client
at a time, so the agent keeps no connection: a VM gets a short session only when a cheap
check says something may need doing. The check reads no QEMU and parses nothing: the
QEMU's pid and start time, the version (inode, mtime, size) of the VM's config, of its
settings file and of ``storage.cfg``, and the virtual size in the header of each image
whose cache is sized from it. When it changes, the settings are compared with what
qdisk's record of this QEMU says was applied; only a difference opens a session. Node
names cannot be seen without QEMU: a VM qdisk tuned gets a confirming session every
``confirm_interval`` seconds (the reopen finds replaced nodes by their chain and tunes
them again). A VM with a ``lock:``, an incoming migration, a block job or a busy monitor
is left alone and retried next cycle.

What each VM's disks have now (values, when, problems) is kept in a small file per node on
pmxcfs (:mod:`qdisk.pve.nodestatus`), written only when it changed.

The agent writes one line per action or problem through ``log`` (a problem once, until it
changes); a VM's problem never stops it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qdisk import cache
from qdisk.errors import QdiskError
from qdisk.image.qcow2 import peek_virtual_size
from qdisk.outcome import DriveOutcome, Outcome
from qdisk.pve.apply import NotNow, Record, apply_settings, read_record
from qdisk.pve.cachesettings import (
    CacheSettings,
    print_settings_value,
    read_settings,
    with_settings,
)
from qdisk.pve.host import HostVm, PveHost, PveRefusedError, process_start_time
from qdisk.pve.nodestatus import DiskStatus, NodeStatusFile, VmStatus, status_time
from qdisk.qemu.nodes import format_node, resolve_disk
from qdisk.qemu.qmp import QmpConnection
from qdisk.qemu.reopen import backing_chain
from qdisk.storage import StorageConfig
from qdisk.system import fileio

DEFAULT_INTERVAL = 10.0
# How often the node names of a VM qdisk tuned are confirmed over QMP.
DEFAULT_CONFIRM_INTERVAL = 120.0
# The agent waits this long for a busy monitor, then retries in its next cycle.
BUSY_WAIT = 1.0
# QEMU's run states in which its block nodes are not (or no longer) active.
_MIGRATING_STATES = frozenset({"inmigrate", "postmigrate", "finish-migrate"})

# A file's version as the cheap check sees it: (inode, mtime in ns, size); None: missing.
FileVersion = tuple[int, int, int] | None


def file_version(path: Path) -> FileVersion:
    """A rename (how Proxmox VE and qdisk write pmxcfs files) gives a new inode, so a
    rewrite within the same second and of the same size is seen too."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


@dataclass(frozen=True)
class _Look:
    """What the cheap check reads of a running VM: if it is unchanged, so is everything
    the settings' effect depends on (but node names)."""

    qemu: tuple[int, int | None]
    config: tuple[str, FileVersion]
    settings: FileVersion
    storage: FileVersion
    sizes: tuple[int | None, ...]


@dataclass
class _Known:
    """What the agent concluded at its last look at a VM: the look, the images whose
    sizes the check reads, whether to try again, and when QEMU was last asked."""

    look: _Look
    images: tuple[str, ...]
    retry: bool
    tuned: bool
    confirmed: float


class AgentStopped(BaseException):
    """Raised by the front end's signal handler to end the agent at once, wherever it is
    (every file it writes is a temporary file renamed, every wait bounded)."""


@dataclass
class Agent:
    """One node's agent; :meth:`cycle` does one round, :func:`run` loops."""

    host: PveHost
    log: Callable[[str], None]
    confirm_interval: float = DEFAULT_CONFIRM_INTERVAL
    clock: Callable[[], float] = time.monotonic
    known: dict[int, _Known] = field(default_factory=dict)
    _logged: dict[str, str] = field(default_factory=dict)
    _status: NodeStatusFile = field(init=False)

    def __post_init__(self) -> None:
        self._status = NodeStatusFile(self.host.paths.node_status(self.host.node))

    # --- logging ---------------------------------------------------------------------------

    def _problem(self, subject: str, text: str, *, key: str | None = None) -> None:
        """Log a problem of ``subject`` once (again only when it changes); ``key`` tells
        apart problems of one subject (a VM's drives)."""
        key = key or subject
        if self._logged.get(key) != text:
            self._logged[key] = text
            self.log(f"{subject}: {text}")

    def _clear(self, subject: str) -> None:
        if self._logged.pop(subject, None) is not None:
            self.log(f"{subject}: resolved")

    def _clear_vm(self, vmid: int) -> None:
        for subject in [name for name in self._logged if _is_vm_subject(name, vmid)]:
            del self._logged[subject]

    # --- the cycle -------------------------------------------------------------------------

    def cycle(self) -> None:
        """Look at every VM running here; give each what it lacks; record what changed."""
        nodes_dir = self.host.paths.nodes_dir
        if not nodes_dir.is_dir():
            self._problem("cluster file system", f"{nodes_dir} is missing (pmxcfs not "
                          "mounted?): nothing can be read; waiting for it")
            return
        self._clear("cluster file system")
        storage = file_version(self.host.paths.storage_cfg)
        running = self._running_vms()
        for vmid in [vmid for vmid in self.known if vmid not in running]:
            del self.known[vmid]
        for vmid in [vmid for vmid in self._status.vms if vmid not in running]:
            self._status.vms.pop(vmid)
            self._clear_vm(vmid)
        for vmid, qemu in running.items():
            try:
                self._visit(vmid, qemu, storage)
            except QdiskError as error:
                self._vm_problem(vmid, str(error), retry=True)
            except Exception as error:  # noqa: BLE001  (a VM's problem never stops the agent)
                self._vm_problem(vmid, f"unexpected {type(error).__name__}: {error}", retry=True)
        self._save_status()

    def _running_vms(self) -> dict[int, tuple[int, int | None]]:
        """The VMs whose QEMU runs here, each as (pid, start time). A QEMU seen before is
        recognised by both; a new one is checked against its command line."""
        run_dir = self.host.layout.run_dir
        try:
            names = os.listdir(run_dir)
        except OSError:
            return {}
        running = {}
        for name in names:
            stem, _dot, suffix = name.partition(".")
            if suffix != "pid" or not stem.isdigit():
                continue
            vmid = int(stem)
            try:
                pid = int((run_dir / name).read_text().strip())
            except (OSError, ValueError):
                continue
            qemu = (pid, process_start_time(pid))
            if qemu[1] is None:
                continue
            known = self.known.get(vmid)
            if (known is not None and known.look.qemu == qemu) \
                    or self.host.running_pid(vmid) == pid:
                running[vmid] = qemu
        return dict(sorted(running.items()))

    def _config_path(self, vmid: int) -> Path:
        """Where the VM's config is: this node's directory, else (the source of a
        migration to here) another node's."""
        paths = self.host.paths
        own = paths.node_vm_config(self.host.node, vmid)
        if own.exists():
            return own
        with contextlib.suppress(OSError):
            for node in sorted(os.listdir(paths.nodes_dir)):
                other = paths.node_vm_config(node, vmid)
                if other.exists():
                    return other
        return own

    def _visit(self, vmid: int, qemu: tuple[int, int | None],
               storage: FileVersion) -> None:
        known = self.known.get(vmid)
        config = self._config_path(vmid)
        look = _Look(qemu, (str(config), file_version(config)),
                     file_version(self.host.paths.cache_settings(vmid)), storage,
                     tuple(peek_virtual_size(image) for image in known.images) if known else ())
        now = self.clock()
        if known is None:
            self.known[vmid] = self._evaluate(vmid, qemu, look, config, confirm=False,
                                              confirmed=now)
            return
        due = known.tuned and now - known.confirmed >= self.confirm_interval
        if known.look == look and not known.retry and not due:
            return
        self._report_shrunk(vmid, known, look)
        self.known[vmid] = self._evaluate(vmid, qemu, look, config,
                                          confirm=due and look.qemu == known.look.qemu,
                                          confirmed=known.confirmed)

    def _report_shrunk(self, vmid: int, known: _Known, look: _Look) -> None:
        for image, before, now in zip(known.images, known.look.sizes, look.sizes):
            if before is not None and now is not None and now < before:
                self._problem(f"VM {vmid}", f"{image}: its virtual size went down from {before} "
                              f"to {now} bytes while QEMU runs it: a disk in use cannot shrink "
                              f"(was the image changed behind QEMU's back?)",
                              key=f"VM {vmid} {image}")

    def _evaluate(self, vmid: int, qemu: tuple[int, int | None], look: _Look, config: Path,
                  *, confirm: bool, confirmed: float) -> _Known:
        """Read the VM's config, settings and record; open a session only if they differ
        (or node names are due a confirmation)."""
        pid = qemu[0]

        def known(images: tuple[str, ...] = (), *, retry: bool = False, tuned: bool = False,
                  asked: bool = False) -> _Known:
            sizes = tuple(peek_virtual_size(image) for image in images)
            return _Known(_Look(look.qemu, look.config, look.settings, look.storage, sizes),
                          images, retry, tuned, self.clock() if asked else confirmed)

        try:
            vm = self.host.load_vm(config.parent.parent.name, vmid)
        except PveRefusedError as error:
            self._vm_problem(vmid, f"runs here but its config cannot be read: {error}")
            return known()
        if vm.lock is not None:
            self._vm_problem(vmid, f"locked ({vm.lock}): Proxmox VE is in the middle of an "
                                   "operation on it; left alone, retried", retry=True)
            return known(retry=True)
        try:
            settings = read_settings(self.host.paths.cache_settings(vmid), vmid)
            storage = self.host.storage_config()
        except QdiskError as error:
            # A damaged file: QEMU keeps what it has until the file is fixed.
            self._vm_problem(vmid, f"settings not applied: {error}")
            return known()
        record = read_record(self.host, vmid, pid)
        images = _auto_sized_images(vm, settings, storage)
        tuned_before = bool(record.disks)
        if not confirm and _in_sync(self.host, vm, settings, record, storage):
            self._clear(f"VM {vmid}")
            self._update_status(vmid, settings, record, {})
            return known(images, tuned=tuned_before)
        if fileio.held_by_another(self.host.paths.qemu_server_lock(vmid)):
            # qm start (still talking to QEMU), qm set or qm resize: its monitor is theirs.
            return known(images, retry=True, tuned=tuned_before)
        try:
            outcomes = apply_settings(self.host, vm, settings, storage=storage,
                                      session_check=_check_session, busy_wait=BUSY_WAIT)
        except NotNow as error:
            self._vm_problem(vmid, f"{error}; left alone, retried", retry=True)
            return known(images, retry=True, tuned=tuned_before)
        except PveRefusedError:
            return known(images)  # it stopped meanwhile: the next cycle forgets it
        self._clear(f"VM {vmid}")
        record = read_record(self.host, vmid, pid)
        problems = self._report(vmid, outcomes)
        self._update_status(vmid, settings, record, problems)
        retry = any(outcome.outcome is Outcome.FAILED for outcome in outcomes)
        return known(images, retry=retry, tuned=bool(record.disks), asked=True)

    def _report(self, vmid: int, outcomes: list[DriveOutcome]) -> dict[str, str]:
        """Log what was done and what went wrong; the problems by drive."""
        problems = {}
        for outcome in outcomes:
            key = f"VM {vmid} {outcome.key}"
            if outcome.outcome is Outcome.APPLIED:
                self._logged.pop(key, None)
                for message in outcome.messages:
                    self.log(f"VM {vmid}: {message}")
            elif outcome.outcome is Outcome.UNCHANGED:
                self._logged.pop(key, None)
            else:
                text = "; ".join(outcome.messages)
                problems[outcome.key] = text
                self._problem(f"VM {vmid}", text, key=key)
        return problems

    def _vm_problem(self, vmid: int, text: str, *, retry: bool = False) -> None:
        self._problem(f"VM {vmid}", text)
        entry = self._status.vms.get(vmid)
        disks = entry.disks if entry is not None else {}
        self._status.vms[vmid] = VmStatus(disks, text, retry)

    def _update_status(self, vmid: int, settings: CacheSettings, record: Record,
                       problems: Mapping[str, str]) -> None:
        """The VM's entry in this node's status: per disk the settings, QEMU's values now
        (when they last changed) and any problem."""
        previous = self._status.vms.get(vmid)
        disks = {}
        for key in sorted({*settings, *record.disks, *problems}):
            applied = record.disks.get(key)
            values = tuple((node.filename, dict(node.cache)) for node in applied.nodes) \
                if applied else ()
            was = previous.disks.get(key) if previous is not None else None
            at = was.at if was is not None and was.values == values else status_time()
            disks[key] = DiskStatus(_settings_text(settings, key), values, at,
                                    problems.get(key))
        self._status.vms[vmid] = VmStatus(disks)

    def _save_status(self) -> None:
        try:
            written = self._status.save()
        except QdiskError as error:
            self._problem("node status", f"not recorded on the cluster file system: {error}; "
                          "retried each cycle")
            return
        if written:
            self._clear("node status")

    def start(self) -> None:
        """Before the first cycle: what an earlier agent of this node left."""
        self._status.load()
        self._status.remove_leftovers()


def _is_vm_subject(subject: str, vmid: int) -> bool:
    return subject == f"VM {vmid}" or subject.startswith(f"VM {vmid} ")


def _settings_text(settings: CacheSettings, key: str) -> str | None:
    values = settings.get(key)
    return print_settings_value(values) if values else None


def _check_session(qmp: QmpConnection) -> None:
    """Leave a VM whose nodes are inactive (a migration) or that a block job uses."""
    status = str(qmp.execute("query-status")["status"])
    if status in _MIGRATING_STATES:
        raise NotNow(f"QEMU's run state is {status} (a migration)")
    jobs = qmp.execute("query-block-jobs")
    if jobs:
        names = ", ".join(f"{job.get('type', 'block')} job on {job.get('device', '?')}"
                          for job in jobs)
        raise NotNow(f"a block job is running ({names})")


def _auto_sized_images(vm: HostVm, settings: CacheSettings,
                       storage: StorageConfig) -> tuple[str, ...]:
    """The top images of the drives whose cache is sized from their image: the cheap
    check reads their virtual size (``qm resize`` grows the top image)."""
    images = []
    for key, values in settings.items():
        with contextlib.suppress(QdiskError):
            drive = with_settings(vm.drive(key), values)
            disk = resolve_disk(drive, storage)
            if cache.uses_auto_size(drive) and disk.format == "qcow2" and disk.path is not None:
                images.append(str(disk.path))
    return tuple(images)


def _in_sync(host: PveHost, vm: HostVm, settings: CacheSettings, record: Record,
             storage: StorageConfig) -> bool:
    """Whether the record says QEMU has every drive's wanted cache (each qcow2 image's
    options as the reopen would give them; QEMU's defaults where none): nothing to ask."""
    for key in {*settings, *record.disks}:
        recorded = {node.filename: dict(node.cache)
                    for node in (record.disks[key].nodes if key in record.disks else ())}
        try:
            disk = resolve_disk(with_settings(vm.drive(key), settings.get(key, {})), storage)
            if disk.format != "qcow2":
                return not recorded
            wanted = {str(node["file"].get("filename")): cache.CacheOptions.from_qemu(node).as_qemu()
                      for node in backing_chain(format_node(disk, tools=host.tools,
                                                            explicit_backing=True))
                      if node["driver"] == "qcow2"}
        except QdiskError:
            return False  # the session finds out, and reports it
        if key in settings and key not in record.disks:
            return False
        if any(wanted.get(name, {}) != recorded.get(name, {}) for name in {*wanted, *recorded}):
            return False
    return True


def run(agent: Agent, *, interval: float, once: bool) -> None:
    """Cycle every ``interval`` seconds (one cycle with ``once``); a stop request ends it
    by raising :class:`AgentStopped`, wherever it is."""
    agent.start()
    while True:
        started = time.monotonic()
        agent.cycle()
        if once:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


@contextlib.contextmanager
def node_agent_lock(host: PveHost) -> Iterator[None]:
    """One agent per node: refused while another holds this node's agent lock."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(fileio.locked(host.paths.agent_lock,
                                              home=host.paths.qdisk_run_dir, timeout=0))
        except fileio.LockTimeout:
            raise PveRefusedError(f"another qdisk agent runs on node {host.node} (it holds "
                                  f"{host.paths.agent_lock})") from None
        yield


"""A VM's lifecycle and config changes, as qemu-server's ``qm`` does them.

``create`` and ``set`` validate every value before anything is written (drive strings with
the drive language, the image-dependent cache rules against the image, the other keys
against :data:`OPTION_SCHEMAS`), allocate new images for the ``STORAGE:SIZE_IN_GiB``
syntax, and write the config atomically under the VM's lock. As qemu-server's
update_vm_api, ``set`` first records every change in ``[PENDING]``; a stopped VM gets them
all at once, a running one only what can change while it runs (:func:`_hotplug_pending`;
cache and throttle changes of a disk go through :mod:`qdisk.live`), the rest waits for the
next ``start``.

A VM runs as a daemonized QEMU whose pid file, QMP socket, VNC socket, log and applied
state (``<vmid>.state.json``) live in ``QDISK_HOME/run``. It counts as running while the
pid file names a live process whose command line has the VM's QMP socket, so a QEMU
that died on its own, or a reused pid, is seen as stopped.

Nothing here prints: results carry warnings, errors are :mod:`qdisk.errors` subclasses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdisk import live, propstring, storage, vmconfig
from qdisk.cache import check_drive_cache
from qdisk.drive import Drive, is_drive_key, make_drive, parse_drive, print_drive
from qdisk.errors import DriveError, InvalidInputError, Problem, QdiskError
from qdisk.image import create_image, read_image
from qdisk.propstring import Property, Schema
from qdisk.qemu.command import RunFiles, Syntax, build_command
from qdisk.qemu.drivestr import escape
from qdisk.qemu.nodes import resolve_disk
from qdisk.qemu.qmp import QmpCommandError, QmpConnection, QmpError
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.tools import last_message, process_memory, qemu_version
from qdisk.vmconfig import (
    Section,
    VmConfig,
    add_pending_delete,
    config_lock,
    delete_value,
    pending_delete_flags,
    section_values,
    set_pending,
    set_value,
)

log = logging.getLogger(__name__)

# qemu-server's fast-plug options: applied at once even while the VM runs.
FAST_PLUG_KEYS = frozenset({"name", "description", "onboot", "tags", "protection", "startup"})
DEFAULT_STOP_TIMEOUT = 10.0
# How long QEMU may take to daemonize (TCG on a loaded host included).
START_TIMEOUT = 120.0
# After SIGKILL the kernel needs a moment to take a process down.
KILL_WAIT = 5.0
MAX_DESCRIPTION_LENGTH = 8192
KVM_DEVICE = "/dev/kvm"


class VmError(QdiskError):
    """A VM operation failed (QEMU would not start or stop); names the VM."""


class VmRefusedError(InvalidInputError):
    """The request does not fit the VM's state (already running, not running, exists)."""


class InvalidOptionsError(InvalidInputError):
    """Values of a ``create``/``set`` are invalid; nothing was written. One line per problem,
    each naming the key (``memory: ...``, ``scsi0.size: ...``)."""

    def __init__(self, vmid: int, problems: Sequence[str]) -> None:
        self.vmid = vmid
        self.problems = tuple(problems)
        super().__init__(f"VM {vmid}: invalid values, nothing changed:\n"
                         + "\n".join(f"  {line}" for line in self.problems))


# --- the VM keys qdisk knows besides drives ----------------------------------------------

_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_DNS_NAME = rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*"
# qemu-server's machine types for x86 (pve-qemu-machine).
_MACHINE = (r"(?:pc|pc(?:-i440fx)?-\d+(?:\.\d+)+(?:\+pve\d+)?(?:\.pxe)?|q35"
            r"|pc-q35-\d+(?:\.\d+)+(?:\+pve\d+)?(?:\.pxe)?)")
_BOOT_DEVICE = r"(?:(?:ide|sata|scsi|virtio|net|hostpci|usb)\d+|efidisk0|tpmstate0)"
_TAG = r"[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*"
_OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
            "l24", "l26", "solaris")
_SCSI_HARDWARE = ("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas",
                  "pvscsi")


def _check_boot_disk(text: str) -> str | None:
    bootable = is_drive_key(text) and not text.startswith(("unused", "efidisk", "tpmstate"))
    return None if bootable else f"invalid drive name '{text}'"


def _single(key: str, prop: Property) -> Schema:
    """A schema whose only property is ``key``, given bare: ``memory: 512``."""
    return Schema({key: dataclasses.replace(prop, default_key=True, optional=False)})


OPTION_SCHEMAS: Mapping[str, Schema] = {
    "name": _single("name", propstring.string(pattern=_DNS_NAME, max_length=128)),
    "memory": _single("memory", propstring.integer(minimum=16)),
    "cores": _single("cores", propstring.integer(minimum=1)),
    "sockets": _single("sockets", propstring.integer(minimum=1)),
    "machine": _single("machine", propstring.string(pattern=_MACHINE, max_length=40)),
    "scsihw": _single("scsihw", propstring.choice(*_SCSI_HARDWARE)),
    "boot": Schema({
        "legacy": propstring.string(pattern=r"[acdn]{1,4}", default_key=True),
        "order": propstring.string(pattern=rf"{_BOOT_DEVICE}(?:;{_BOOT_DEVICE})*"),
    }),
    "bootdisk": _single("bootdisk", propstring.string(format=propstring.StringFormat(
        "pve-qm-bootdisk", _check_boot_disk))),
    "ostype": _single("ostype", propstring.choice(*_OSTYPES)),
    "onboot": _single("onboot", propstring.boolean()),
    "kvm": _single("kvm", propstring.boolean()),
    "tags": _single("tags", propstring.string(pattern=rf"{_TAG}(?:;{_TAG})*")),
}
# Free text: not a property string (commas and line breaks are allowed).
DESCRIPTION_KEY = "description"


def known_key(key: str) -> bool:
    return key in OPTION_SCHEMAS or key == DESCRIPTION_KEY or is_drive_key(key)


def canonical_option(key: str, text: str) -> str:
    """The value of a non-drive key as it is stored (booleans ``1``/``0``, ``tags`` joined
    with ``;``); raises InvalidOptionsError-style lines through :class:`_Problems`."""
    if key == DESCRIPTION_KEY:
        if len(text) > MAX_DESCRIPTION_LENGTH:
            raise _Problems([f"{key}: value may only be {MAX_DESCRIPTION_LENGTH} characters long"])
        return text
    if key == "tags":
        # PVE accepts ';', ',' and blanks between tags and stores ';'.
        text = ";".join(part for part in re.split(r"[;,\s]+", text) if part)
    schema = OPTION_SCHEMAS[key]
    checked = propstring.parse_property_string(schema, text)
    problems = [f"{key}: {problem.message}" if problem.property in (key, None)
                else f"{key}.{problem.property}: {problem.message}" for problem in checked.problems]
    if not problems and not checked.values:
        problems.append(f"{key}: value must not be empty")
    if problems:
        raise _Problems(problems)
    return propstring.print_property_string(schema, checked.values)


class _Problems(Exception):
    """Problems of one key, collected into an InvalidOptionsError by the caller."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# --- validating and preparing changes ----------------------------------------------------


def _drive_files(sections: Iterable[Section]) -> Iterator[tuple[str, str]]:
    """``(key, file)`` of every drive line in ``sections`` that parses."""
    for section in sections:
        for key, text in vmconfig.drive_items(section.values):
            file = _drive_file(key, text)
            if file is not None:
                yield key, file


def _volnames_on(config: VmConfig, storage_id: str) -> Iterator[str]:
    """Volume names on ``storage_id`` the config already names (so no new disk takes them)."""
    for _, file in _drive_files((config.current, config.pending, *config.snapshots.values())):
        parsed = storage.parse_volume_id(file)
        if parsed is not None and parsed[0] == storage_id:
            yield parsed[1].rsplit("/", 1)[-1]


def _allocated(settings: Settings, config: VmConfig, drive: Drive,
               storage_config: StorageConfig, created: list[Path]) -> Drive:
    """The drive with its ``STORAGE:SIZE`` file replaced by a new image's volume id and
    ``size=`` (``format=`` dropped: the name carries it), or the drive itself."""
    allocation = storage.parse_allocation(drive.file)
    if allocation is None or drive.is_cdrom or drive.interface == "unused":
        return drive
    fmt = str(drive.get("format") or storage_config.get(allocation.storage_id).default_format)
    if fmt not in storage.ALLOCATABLE_FORMATS:
        raise DriveError(drive.key, [Problem(
            "format", f"cannot allocate a {fmt} image (possible: "
                      f"{', '.join(storage.ALLOCATABLE_FORMATS)})")])
    if allocation.size <= 0:
        raise DriveError(drive.key, [Problem(
            "file", f"'{drive.file}': the size of a new disk must be more than 0 GiB")])
    target = storage.allocatable_storage(storage_config, allocation.storage_id)
    volname = storage.free_disk_volname(target, config.vmid, fmt,
                                        taken=_volnames_on(config, target.id))
    path = storage.image_path(target, volname)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = create_image(settings.tools, path, fmt, allocation.size)
    created.append(path)
    log.info("%s: created %s (%d bytes)", drive.key, path, image.virtual_size)
    values = {name: value for name, value in drive.values.items() if name != "format"}
    values.update(file=f"{target.id}:{volname}", size=image.virtual_size)
    return make_drive(drive.key, values).drive


def _check_image(drive: Drive, storage_config: StorageConfig) -> None:
    """The drive's rules that need its volume: the storage resolves it, and the cache keys
    fit the qcow2 image (entry size within the cluster size, ...) when it exists."""
    if drive.interface == "unused":
        storage.resolve(storage_config, drive.file)
        return
    disk = resolve_disk(drive, storage_config)
    path = Path(disk.path) if disk.path is not None else None
    if disk.format != "qcow2" or path is None or not (path.is_file() or path.is_block_device()):
        return
    problems = check_drive_cache(drive, read_image(path, format="qcow2"))
    if problems:
        raise DriveError(drive.key, problems)


def _problem_lines(key: str, error: InvalidInputError) -> list[str]:
    if isinstance(error, DriveError):
        return error.lines()
    text = str(error)
    return [text if text.startswith(f"{key}:") else f"{key}: {text}"]


@dataclass
class _Prepared:
    """Validated changes: the values to store (canonical strings) and the keys to delete."""

    values: dict[str, str] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _prepare(settings: Settings, config: VmConfig, changes: Mapping[str, str],
             deletes: Sequence[str], storage_config: StorageConfig,
             created: list[Path]) -> _Prepared:
    """Every change checked, new images allocated (appended to ``created``, which the caller
    removes if anything fails); raises InvalidOptionsError with every problem found."""
    prepared = _Prepared()
    problems: list[str] = []
    drives: list[Drive] = []
    present = config.merged()
    for key, text in changes.items():
        if not known_key(key):
            problems.append(f"unknown option '{key}'")
        elif key in deletes:
            problems.append(f"{key}: cannot set and delete the same option at once")
        elif is_drive_key(key):
            try:
                parsed = parse_drive(key, text)
            except DriveError as error:
                problems.extend(error.lines())
                continue
            drives.append(parsed.drive)
            prepared.warnings.extend(parsed.warnings)
        else:
            try:
                prepared.values[key] = canonical_option(key, text)
            except _Problems as bad:
                problems.extend(bad.lines)
    for key in deletes:
        if not known_key(key) and key not in present:
            problems.append(f"unknown option '{key}'")
        elif key not in present and key not in config.current.values:
            prepared.warnings.append(f"cannot delete '{key}' - not set in current configuration!")
        else:
            prepared.deletes.append(key)
    if problems:
        raise InvalidOptionsError(config.vmid, problems)
    for drive in drives:
        try:
            drive = _allocated(settings, config, drive, storage_config, created)
            _check_image(drive, storage_config)
        except InvalidInputError as error:
            problems.extend(_problem_lines(drive.key, error))
            continue
        prepared.values[drive.key] = print_drive(drive)
    if problems:
        raise InvalidOptionsError(config.vmid, problems)
    return prepared


def _remove_images(paths: Iterable[Path]) -> None:
    """Remove images, and the VM's image directory they leave empty."""
    for path in paths:
        path.unlink(missing_ok=True)
        log.info("removed %s", path)
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeResult:
    """What a ``create``/``set`` did: keys now in the applied config, keys left pending (a
    running VM gets them at the next start), changes QEMU refused (``key: QEMU's message``)
    or that could not reach it (``key: why``; both stay pending), and messages for the user."""

    applied: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# --- create and set ------------------------------------------------------------------------


def create(settings: Settings, vmid: int, options: Mapping[str, str]) -> ChangeResult:
    """Create VM ``vmid``'s config from ``options`` (``qm create``); refuses an existing VM."""
    path = vmconfig.config_path(settings, vmid)
    created: list[Path] = []
    with config_lock(settings, vmid):
        if path.exists():
            raise VmRefusedError(f"VM {vmid}: configuration file '{path}' already exists")
        config = VmConfig(vmid)
        try:
            prepared = _prepare(settings, config, options, (), storage.load(settings), created)
            for key, value in prepared.values.items():
                set_value(config.current, key, value)
            vmconfig.save(settings, config)
        except BaseException:
            _remove_images(created)
            raise
    return ChangeResult(applied=tuple(prepared.values), warnings=tuple(prepared.warnings))


def set_options(settings: Settings, vmid: int, changes: Mapping[str, str],
                deletes: Sequence[str] = ()) -> ChangeResult:
    """Change VM ``vmid``'s config (``qm set``): everything is checked first; then each
    change becomes pending and is applied as far as the VM's state allows."""
    created: list[Path] = []
    with config_lock(settings, vmid):
        config = vmconfig.load(settings, vmid)
        storage_config = storage.load(settings)
        try:
            prepared = _prepare(settings, config, changes, deletes, storage_config, created)
            warnings = list(prepared.warnings)
            for key, value in prepared.values.items():
                set_pending(config, key, value)
            for key in prepared.deletes:
                if key.startswith("unused"):
                    warnings += _drop_unused_now(config, key, storage_config)
                else:
                    add_pending_delete(config, key)
            running = running_pid(settings, vmid) is not None
            if not running:
                warnings += _apply_pending(config, storage_config)
            # A running VM's changes are saved pending first, as qemu-server does: a crash
            # during a live change loses nothing. A stopped VM's config is written once.
            vmconfig.save(settings, config)
        except BaseException:
            _remove_images(created)
            raise
        refused: list[str] = []
        failed: list[str] = []
        notes: list[str] = []
        if running:
            _hotplug_pending(settings, config, storage_config, refused, failed, notes)
            vmconfig.save(settings, config)
    changed = [*prepared.values, *prepared.deletes]
    pending_now = set(section_values(config.pending)) | set(pending_delete_flags(config))
    return ChangeResult(applied=tuple(key for key in changed if key not in pending_now),
                        pending=tuple(key for key in changed if key in pending_now),
                        refused=tuple(refused), failed=tuple(failed), warnings=tuple(warnings),
                        notes=tuple(notes))


def _drive_file(key: str, text: str) -> str | None:
    """The ``file`` of a stored drive string (None if it does not parse)."""
    try:
        return parse_drive(key, text).drive.file
    except DriveError:
        return None


def _volume_users(config: VmConfig, volid: str) -> list[str]:
    return [key for key, file in _drive_files((config.current, config.pending)) if file == volid]


def _left_volume(config: VmConfig, key: str, text: str) -> str | None:
    """The volume of drive string ``text`` that just left ``key``, if it is the VM's own
    disk (no cdrom) and no other drive uses it: qemu-server keeps or frees only those."""
    try:
        drive = parse_drive(key, text).drive
    except DriveError:
        return None
    if drive.is_cdrom or not storage.owned_image(drive.file, config.vmid) \
            or _volume_users(config, drive.file):
        return None
    return drive.file


def _free_volume(volid: str, storage_config: StorageConfig) -> list[str]:
    try:
        path = Path(storage.resolve(storage_config, volid).path)
    except InvalidInputError as error:
        return [f"{volid}: volume not removed: {error}"]
    _remove_images([path])
    return []


def _drop_unused_now(config: VmConfig, key: str, storage_config: StorageConfig) -> list[str]:
    """Deleting ``unusedN`` frees its volume at once, as qemu-server does."""
    text = config.current.values.pop(key, None) or config.pending.values.pop(key, None)
    volid = None if text is None else _left_volume(config, key, text)
    return [] if volid is None else _free_volume(volid, storage_config)


def _register_unused(config: VmConfig, key: str, volid: str) -> str:
    """The VM's own disk that left ``key`` becomes ``unusedN``, so it is not lost
    (qemu-server's vmconfig_register_unused_drive)."""
    number = next(n for n in range(256) if f"unused{n}" not in config.current.values)
    config.current.values[f"unused{number}"] = volid
    return f"{key}: {volid} is now unused{number}"


def _apply_pending(config: VmConfig, storage_config: StorageConfig) -> list[str]:
    """Every pending change into the applied config (a stopped VM; qemu-server's
    vmconfig_apply_pending): a disk that leaves becomes ``unusedN``, or is freed when its
    deletion is forced (``!key``). Returns notes for the user."""
    notes: list[str] = []
    for key, force in pending_delete_flags(config).items():
        old = config.current.values.get(key)
        delete_value(config.current, key)
        volid = _left_volume(config, key, old) if old is not None and is_drive_key(key) else None
        if volid is not None:
            notes += _free_volume(volid, storage_config) if force \
                else [_register_unused(config, key, volid)]
    for key, value in section_values(config.pending).items():
        if key == "delete":
            continue
        old = config.current.values.get(key)
        set_value(config.current, key, value)
        if old is not None and is_drive_key(key) \
                and _drive_file(key, old) != _drive_file(key, value):
            volid = _left_volume(config, key, old)
            if volid is not None:
                notes.append(_register_unused(config, key, volid))
    config.pending = Section()
    return notes


def _apply_one(config: VmConfig, key: str, value: str) -> None:
    set_value(config.current, key, value)
    delete_value(config.pending, key)


def _hotplug_pending(settings: Settings, config: VmConfig, storage_config: StorageConfig,
                     refused: list[str], failed: list[str], notes: list[str]) -> None:
    """What a running VM can take now (qemu-server's vmconfig_hotplug_pending): fast-plug
    keys, and drive changes that keep the volume, through :mod:`qdisk.live`. Everything
    else stays pending. QEMU's refusals go to ``refused``, other failures to ``failed``;
    the key stays pending."""
    for key in list(pending_delete_flags(config)):
        if key in FAST_PLUG_KEYS:
            delete_value(config.current, key)
            vmconfig.remove_pending_delete(config, key)
    for key, value in list(section_values(config.pending).items()):
        if key in FAST_PLUG_KEYS:
            _apply_one(config, key, value)
        elif is_drive_key(key) and key in config.current.values and not key.startswith("unused"):
            try:
                old = parse_drive(key, config.current.values[key]).drive
                new = parse_drive(key, value).drive
            except DriveError:
                continue
            if old.file != new.file:
                continue
            try:
                outcome = live.apply_drive_change(settings, config.vmid, old, new, storage_config)
            except QmpCommandError as error:
                refused.append(f"{key}: {error.desc}")
                continue
            except QdiskError as error:
                # QEMU's monitor failed (QEMU died?), or the volume no longer resolves: the
                # change waits for the next start, and the other keys still get their turn.
                failed.append(f"{key}: {error}")
                continue
            notes.extend(outcome.messages)
            if outcome.outcome is not live.LiveOutcome.PENDING:
                _apply_one(config, key, value)


# --- config and pending views ---------------------------------------------------------------


def config_values(settings: Settings, vmid: int, *, current: bool = False) -> dict[str, str]:
    """``qm config``: the values with pending changes merged, or (``current``) the applied
    ones; the description as ``description``."""
    config = vmconfig.load(settings, vmid)
    return section_values(config.current) if current else config.merged()


def pending_items(settings: Settings, vmid: int) -> list[dict[str, Any]]:
    """``qm pending --output-format json``: per key ``value`` (applied), ``pending`` (new),
    ``delete`` (0, 1, or 2 for a forced deletion)."""
    config = vmconfig.load(settings, vmid)
    current = section_values(config.current)
    new = {key: value for key, value in section_values(config.pending).items() if key != "delete"}
    deletions = pending_delete_flags(config)
    items: list[dict[str, Any]] = []
    for key in sorted(set(current) | set(new) | set(deletions)):
        item: dict[str, Any] = {"key": key}
        if key in current:
            item["value"] = current[key]
        if key in new:
            item["pending"] = new[key]
        item["delete"] = (2 if deletions[key] else 1) if key in deletions else 0
        items.append(item)
    return items


# --- run files and process state -----------------------------------------------------------


def _run_files(settings: Settings, vmid: int) -> list[Path]:
    """The files of a running VM (the log stays until destroy: it explains a failure)."""
    files = RunFiles.of(settings, vmid)
    return [files.pid, files.qmp, files.vnc, files.state]


def _remove_run_files(settings: Settings, vmid: int) -> None:
    for path in _run_files(settings, vmid):
        path.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (QEMU is daemonized: not our child, its
    parent reaps it) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name in parentheses may contain blanks; the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def running_pid(settings: Settings, vmid: int) -> int | None:
    """The pid of VM ``vmid``'s QEMU, if its pid file names a live QEMU with this VM's QMP
    socket (a stale pid file, or a pid reused by another process, is not running)."""
    try:
        pid = int(RunFiles.of(settings, vmid).pid.read_text().strip())
    except (OSError, ValueError):
        return None
    if not process_alive(pid):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    socket = f"path={escape(str(RunFiles.of(settings, vmid).qmp))},"
    return pid if any(socket in argument for argument in argv) else None


@dataclass(frozen=True)
class VmStatus:
    """A VM's QEMU pid (None: stopped), its QMP socket and the state applied to it."""

    vmid: int
    pid: int | None
    qmp: Path
    state: Mapping[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def status(self) -> str:
        return "running" if self.running else "stopped"

    def memory(self) -> dict[str, int]:
        """QEMU's ``VmSize``/``VmRSS`` in bytes (empty when stopped)."""
        return process_memory(self.pid) if self.pid is not None else {}

    def as_json(self) -> dict[str, Any]:
        memory = self.memory()
        return {"vmid": self.vmid, "status": self.status, "pid": self.pid,
                "qmp": str(self.qmp),
                "syntax": self.state.get("syntax"), "disks": self.state.get("disks", {}),
                "memory": {"vm-size": memory.get("VmSize"), "vm-rss": memory.get("VmRSS")}}


def status(settings: Settings, vmid: int, *, clean_up: bool = True) -> VmStatus:
    """Whether VM ``vmid`` runs, and the state applied to it. The run files of a QEMU that
    died on its own are removed (``clean_up``)."""
    vmconfig.load(settings, vmid)
    pid = running_pid(settings, vmid)
    if pid is None:
        if clean_up and any(path.exists() for path in _run_files(settings, vmid)):
            with config_lock(settings, vmid):
                # A start may have run meanwhile: look again under the lock.
                if running_pid(settings, vmid) is None:
                    _remove_run_files(settings, vmid)
        return VmStatus(vmid, None, RunFiles.of(settings, vmid).qmp)
    return VmStatus(vmid, pid, RunFiles.of(settings, vmid).qmp,
                    live.read_state(settings, vmid) or {})


@dataclass(frozen=True)
class VmSummary:
    vmid: int
    name: str | None
    status: str


def list_vms(settings: Settings) -> list[VmSummary]:
    """Every VM with a config: id, name and status (``qm list``)."""
    summaries = []
    for vmid in vmconfig.list_vmids(settings):
        config = vmconfig.load(settings, vmid)
        running = running_pid(settings, vmid) is not None
        summaries.append(VmSummary(vmid, config.current.values.get("name"),
                                   "running" if running else "stopped"))
    return summaries


# --- start, stop, destroy ------------------------------------------------------------------


def kvm_usable() -> bool:
    """Whether this process can open ``/dev/kvm`` read/write (what QEMU's KVM needs)."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _accelerator(requested: str | None, config: VmConfig) -> str | None:
    """The requested accelerator, else KVM when usable and not turned off with ``kvm: 0``
    (None: the command's own rule, TCG, applies)."""
    if requested:
        return requested
    if propstring.parse_boolean(config.current.values.get("kvm", "1")) is False:
        return None
    return "kvm" if kvm_usable() else "tcg"


@dataclass(frozen=True)
class StartResult:
    pid: int
    syntax: Syntax
    accel: str | None
    warnings: tuple[str, ...] = ()


def start(settings: Settings, vmid: int, *, syntax: Syntax | None = None,
          accel: str | None = None) -> StartResult:
    """Start VM ``vmid`` (pending changes applied first, as qemu-server does) with the
    command ``showcmd`` prints; returns once QEMU has daemonized."""
    with config_lock(settings, vmid):
        config = vmconfig.load(settings, vmid)
        pid = running_pid(settings, vmid)
        if pid is not None:
            raise VmRefusedError(f"VM {vmid} is already running (pid {pid})")
        _remove_run_files(settings, vmid)
        warnings: list[str] = []
        storage_config = storage.load(settings)
        if vmconfig.has_pending(config):
            warnings += _apply_pending(config, storage_config)
            vmconfig.save(settings, config)
        chosen_accel = _accelerator(accel, config)
        command = build_command(config, storage_config, settings,
                                qemu_version=lambda: qemu_version(settings.tools.qemu_system),
                                syntax=syntax, accel=chosen_accel)
        warnings += command.warnings
        pid = _run_daemon(settings, vmid, command.argv)
        try:
            live.write_state(settings, vmid, live.initial_state(command.syntax, command.graphs, pid))
        except BaseException:
            # Without its state a running VM could not take live changes: no half start.
            _kill_leftover(settings, vmid)
            raise
    return StartResult(pid, command.syntax, chosen_accel, tuple(warnings))


def _run_daemon(settings: Settings, vmid: int, argv: list[str]) -> int:
    """Run QEMU with ``-daemonize``: its parent exits once the VM is set up. Returns the pid."""
    log_file_path = RunFiles.of(settings, vmid).log
    log_file_path.parent.mkdir(parents=True, exist_ok=True)
    log.debug("starting VM %d: %s", vmid, " ".join(argv))
    # stderr to a file, not a pipe: the daemon inherits it, and a pipe would stay open.
    with open(log_file_path, "w", encoding="utf-8") as log_file:
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=log_file, timeout=START_TIMEOUT)
        except FileNotFoundError:
            raise VmError(f"VM {vmid}: {argv[0]}: program not found (install it, or set "
                          f"QDISK_QEMU_SYSTEM)") from None
        except subprocess.TimeoutExpired:
            _kill_leftover(settings, vmid)
            raise VmError(f"VM {vmid}: QEMU did not start within {START_TIMEOUT:g} s "
                          f"(log: {log_file_path})") from None
    if result.returncode != 0:
        _kill_leftover(settings, vmid)
        message = last_message(log_file_path.read_text(errors="replace"))
        raise VmError(f"VM {vmid}: QEMU failed to start: "
                      f"{message or f'exit code {result.returncode}'}")
    pid = running_pid(settings, vmid)
    if pid is None:
        raise VmError(f"VM {vmid}: QEMU exited right after starting (log: {log_file_path})")
    return pid


def _kill_leftover(settings: Settings, vmid: int) -> None:
    """A half-started QEMU must not linger: kill whatever the pid file names, if it is ours."""
    pid = running_pid(settings, vmid)
    if pid is not None:
        _kill(pid)
    _remove_run_files(settings, vmid)


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return _wait_gone(pid, KILL_WAIT)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass(frozen=True)
class StopResult:
    pid: int
    killed: bool
    warnings: tuple[str, ...] = ()


def stop(settings: Settings, vmid: int, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> StopResult:
    """Ask QEMU to quit over QMP; kill it if it is still there after ``timeout`` seconds."""
    with config_lock(settings, vmid):
        vmconfig.load(settings, vmid)
        pid = running_pid(settings, vmid)
        if pid is None:
            _remove_run_files(settings, vmid)
            raise VmRefusedError(f"VM {vmid} is not running")
        warnings: list[str] = []
        # One deadline: a monitor that hangs does not double the time to the kill.
        deadline = time.monotonic() + timeout
        try:
            socket = RunFiles.of(settings, vmid).qmp
            with QmpConnection(socket, timeout=max(timeout, 1.0)) as qmp:
                qmp.execute("quit")
        except QmpError as error:
            # QEMU may close the monitor before it answers "quit": the process decides.
            log.info("VM %d: quit over QMP: %r", vmid, error)
        killed = not _wait_gone(pid, max(0.0, deadline - time.monotonic()))
        if killed:
            warnings.append(f"VM {vmid}: QEMU did not quit within {timeout:g} s: killed")
            if not _kill(pid):
                raise VmError(f"VM {vmid}: QEMU (pid {pid}) survives SIGKILL")
        _remove_run_files(settings, vmid)
    return StopResult(pid, killed, tuple(warnings))


def destroy(settings: Settings, vmid: int) -> list[Path]:
    """Remove a stopped VM: its config, run files, log, lock and the images it owns
    (``STORAGE:<vmid>/vm-<vmid>-disk-*`` named anywhere in the current or pending config).
    Returns the removed images."""
    lock = vmconfig.lock_path(settings, vmid)
    with config_lock(settings, vmid):
        config = vmconfig.load(settings, vmid)
        if running_pid(settings, vmid) is not None:
            raise VmRefusedError(f"VM {vmid} is running: stop it first")
        storage_config = storage.load(settings)
        images = []
        for volid in sorted(_owned_volumes(config)):
            try:
                images.append(Path(storage.resolve(storage_config, volid).path))
            except InvalidInputError as error:
                log.warning("VM %d: %s: not removed: %s", vmid, volid, error)
        images = [path for path in images if path.exists()]
        _remove_images(images)
        _remove_run_files(settings, vmid)
        RunFiles.of(settings, vmid).log.unlink(missing_ok=True)
        vmconfig.config_path(settings, vmid).unlink()
        lock.unlink(missing_ok=True)
    return images


def _owned_volumes(config: VmConfig) -> set[str]:
    return {file for _, file in _drive_files((config.current, config.pending))
            if storage.owned_image(file, config.vmid)}

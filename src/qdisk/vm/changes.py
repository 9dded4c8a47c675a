"""``create`` and ``set``, as qemu-server's ``qm create`` and ``qm set``.

Every value is checked before anything is written (drive strings with the drive language,
the image-dependent cache rules against the image, the other keys against
:data:`qdisk.config.vmoptions.OPTION_SCHEMAS`), new images are allocated for the
``STORAGE:SIZE_IN_GiB`` syntax, and the config is written atomically under the VM's lock.
As qemu-server's update_vm_api, ``set`` first records every change in ``[PENDING]``; a
stopped VM gets them all at once, a running one what it can take now
(:mod:`qdisk.vm.pending`), the rest waits for the next ``start``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qdisk import storage
from qdisk.cache import check_drive_cache
from qdisk.config.drive import Drive, is_drive_key, parse_drive, print_drive
from qdisk.config.vmconfig import (
    VmConfig,
    add_pending_delete,
    pending_delete_flags,
    section_values,
    set_pending,
    set_value,
)
from qdisk.config.vmoptions import InvalidOptionError, canonical_option, known_key, read_options
from qdisk.errors import DriveError, InvalidInputError, InvalidOptionsError, Problem, ToolError
from qdisk.image.info import DataFileError, read_chain, read_image, refuse_external_data_file
from qdisk.outcome import ChangeError, DriveOutcome, change_error
from qdisk.qemu.nodes import resolve_disk
from qdisk.settings import Settings, Tools
from qdisk.storage import StorageConfig
from qdisk.system.tools import qemu_machines
from qdisk.vm import store
from qdisk.vm.allocation import Allocator, allocating
from qdisk.vm.errors import StaleDigestError, VmRefusedError
from qdisk.vm.journal import check_unlocked, vm_lock
from qdisk.vm.pending import (
    Messages,
    apply_pending,
    check_pending,
    drop_unused_now,
    hotplug_pending,
)
from qdisk.vm.state import running_pid


@dataclass(frozen=True)
class ChangeResult:
    """What a ``create``/``set`` of VM ``vmid`` did: keys now in the applied config, keys
    left pending (a running VM gets them at the next start), what the running VM did with
    each drive change it was asked to take (a refused or failed one stays pending), and
    messages for the user."""

    vmid: int
    applied: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    outcomes: tuple[DriveOutcome, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def error(self) -> ChangeError | None:
        """The error for the drive changes the running VM did not take (see
        :func:`qdisk.outcome.change_error`)."""
        return change_error(f"VM {self.vmid}", self.outcomes,
                            consequence="the change stays pending")


def create(settings: Settings, vmid: int, options: Mapping[str, str]) -> ChangeResult:
    """Create VM ``vmid``'s config from ``options`` (``qm create``); refuses an existing VM."""
    path = settings.layout.vm_config(vmid)
    with vm_lock(settings, vmid, new=True):
        if path.exists():
            raise VmRefusedError(f"VM {vmid}: configuration file '{path}' already exists")
        config = VmConfig(vmid)
        with allocating(settings, config, storage.load(settings)) as allocator:
            prepared = _prepare(config, options, (), allocator)
            for key, value in prepared.values.items():
                set_value(config.current, key, value)
            store.save(settings, config)
    return ChangeResult(vmid, applied=tuple(prepared.values), warnings=tuple(prepared.warnings))


def set_options(settings: Settings, vmid: int, changes: Mapping[str, str],
                deletes: Sequence[str] = (), *, digest: str | None = None,
                skiplock: bool = False) -> ChangeResult:
    """Change VM ``vmid``'s config (``qm set``): everything is checked first; then each
    change becomes pending and is applied as far as the VM's state allows. ``digest``
    (the one :func:`qdisk.vm.views.config_values` gave) refuses a change to a config that
    changed since it was read; a ``lock:`` refuses any change unless ``skiplock``."""
    if not changes and not deletes:
        raise InvalidInputError("no options specified")  # qemu-server's words
    with vm_lock(settings, vmid):
        config = store.load(settings, vmid)
        if digest and digest.lower() != config.digest:
            raise StaleDigestError()
        check_unlocked(config, skiplock=skiplock)
        check_pending(settings, config, replaced=(*changes, *deletes))
        storage_config = storage.load(settings)
        with allocating(settings, config, storage_config) as allocator:
            prepared = _prepare(config, changes, deletes, allocator)
            messages = Messages(warnings=list(prepared.warnings))
            for key, value in prepared.values.items():
                set_pending(config, key, value)
            for key in prepared.deletes:
                if key.startswith("unused"):
                    messages.add(drop_unused_now(config, key, storage_config))
                else:
                    add_pending_delete(config, key)
            running = running_pid(settings, vmid) is not None
            if not running:
                messages.add(apply_pending(config, storage_config))
            # A running VM's changes are saved pending first, as qemu-server does: a crash
            # during a live change loses nothing. A stopped VM's config is written once.
            store.save(settings, config)
        outcomes: tuple[DriveOutcome, ...] = ()
        if running:
            hotplugged = hotplug_pending(settings, config, storage_config)
            outcomes = hotplugged.outcomes
            messages.notes += hotplugged.notes
            store.save(settings, config)
    changed = [*prepared.values, *prepared.deletes]
    pending_now = set(section_values(config.pending)) | set(pending_delete_flags(config))
    return ChangeResult(vmid, applied=tuple(key for key in changed if key not in pending_now),
                        pending=tuple(key for key in changed if key in pending_now),
                        outcomes=outcomes,
                        warnings=tuple(messages.warnings), notes=tuple(messages.notes))


# --- checking and preparing changes ------------------------------------------------------


@dataclass
class _Prepared:
    """Validated changes: the values to store (canonical strings) and the keys to delete."""

    values: dict[str, str] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _prepare(config: VmConfig, changes: Mapping[str, str], deletes: Sequence[str],
             allocator: Allocator) -> _Prepared:
    """Every change checked, new images allocated; raises InvalidOptionsError with every
    problem found: first the syntax of every value, then (all of it valid) the machine
    type against the installed QEMU and each drive against its volume and image."""
    prepared, drives = _checked_syntax(config, changes, deletes)
    problems: list[tuple[str, str]] = []
    machine = prepared.values.get("machine")
    machine_problem = None if machine is None else _machine_problem(machine,
                                                                    allocator.settings.tools)
    if machine_problem is not None:
        problems.append(("machine", machine_problem))
    for drive in drives:
        try:
            drive = allocator.allocated(drive)
            prepared.warnings += _check_image(drive, allocator.storage_config,
                                              allocator.settings.tools)
        except InvalidInputError as error:
            problems += [(drive.key, line) for line in _problem_lines(drive.key, error)]
            continue
        prepared.values[drive.key] = print_drive(drive)
    if problems:
        raise InvalidOptionsError(config.vmid, problems)
    return prepared


def _checked_syntax(config: VmConfig, changes: Mapping[str, str],
                    deletes: Sequence[str]) -> tuple[_Prepared, list[Drive]]:
    """The changes whose syntax alone is checked: the other options' canonical values,
    the keys to delete, and the drives (their volumes and images still to check)."""
    prepared = _Prepared()
    problems: list[tuple[str, str]] = []
    drives: list[Drive] = []
    present = config.merged()
    for key, text in changes.items():
        if not known_key(key):
            problems.append((key, f"unknown option '{key}'"))
        elif key in deletes:
            problems.append((key, f"{key}: cannot set and delete the same option at once"))
        elif is_drive_key(key):
            try:
                parsed = parse_drive(key, text)
            except DriveError as error:
                problems += [(key, line) for line in error.lines()]
                continue
            drives.append(parsed.drive)
            prepared.warnings.extend(parsed.warnings)
        else:
            try:
                prepared.values[key] = canonical_option(key, text)
            except InvalidOptionError as error:
                problems += [(key, line) for line in error.lines]
    for key in deletes:
        if not known_key(key) and key not in present:
            problems.append(("delete", f"unknown option '{key}'"))
        elif key not in present and key not in config.current.values:
            prepared.warnings.append(f"cannot delete '{key}' - not set in current configuration!")
        else:
            prepared.deletes.append(key)
    if problems:
        raise InvalidOptionsError(config.vmid, problems)
    return prepared, drives


def _machine_problem(value: str, tools: Tools) -> str | None:
    """A machine type the installed QEMU lacks (``pc-q35-99.0``), refused now rather than at
    the next start. Unchecked when QEMU cannot be asked (``showcmd --qemu-version`` works
    without it)."""
    machine = read_options({"machine": value}).machine
    try:
        offered = qemu_machines(tools.qemu_system)
    except ToolError:
        return None
    if machine in offered:
        return None
    family = "pc-q35-" if machine.startswith("pc-q35-") else "pc-i440fx-"
    versions = {name: tuple(int(part) for part in name.removeprefix(family).split("."))
                for name in offered
                if name.startswith(family) and re.fullmatch(r"\d+(\.\d+)*", name.removeprefix(family))}
    # QEMU does not list its machines in version order.
    newest = max(versions, key=lambda name: versions[name], default=None)
    return (f"machine: the installed QEMU ({tools.qemu_system}) has no machine type "
            f"'{machine}'" + (f" (its newest of the kind is {newest})" if newest else ""))


def _check_image(drive: Drive, storage_config: StorageConfig, tools: Tools) -> list[str]:
    """The drive's rules that need its volume: the storage resolves it, and the cache keys
    fit the qcow2 image (entry size within the cluster size, ...) when it exists. Returns
    warnings (a qcow2 image the drive will pass as raw)."""
    if drive.interface == "unused":
        storage.resolve(storage_config, drive.file)
        return []
    disk = resolve_disk(drive, storage_config)
    path = disk.existing_image
    if path is None:
        return []
    if disk.format == "qcow2":
        chain = read_chain(path, format="qcow2", tools=tools)
        problems = check_drive_cache(drive, chain[0])
        for image in chain[1:]:
            # QEMU would open a backing image's external data file read-write too.
            try:
                refuse_external_data_file(image)
            except DataFileError as error:
                problems.append(Problem("file", str(error)))
        if problems:
            raise DriveError(drive.key, problems)
        return []
    if drive.get("format") is None and disk.volume is not None and disk.volume.format is None \
            and _probed_qcow2(path, tools):
        # qemu-server's rule for a path without format=: QEMU opens it raw, never probing.
        return [f"{drive.key}: '{drive.file}' is a qcow2 image, but without format=qcow2 it is "
                f"passed to QEMU as raw: the guest sees the qcow2 file's bytes and the qcow2-* "
                f"options have no effect (add format=qcow2 if the guest should see the disk)"]
    return []


def _probed_qcow2(path: Path, tools: Tools) -> bool:
    try:
        return read_image(path, tools=tools).is_qcow2
    except InvalidInputError:
        return False  # not a readable image: the guest gets the bytes, as it asked


def _problem_lines(key: str, error: InvalidInputError) -> list[str]:
    if isinstance(error, DriveError):
        return error.lines()
    text = str(error)
    return [text if text.startswith(f"{key}:") else f"{key}: {text}"]

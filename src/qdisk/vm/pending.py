"""``[PENDING]``: checked before any of it is applied, applied at once to a stopped VM
(qemu-server's vmconfig_apply_pending), hotplugged into a running one as far as it can
take it (vmconfig_hotplug_pending)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.config.drive import is_drive_key, parse_drive
from qdisk.config.vmconfig import (
    Section,
    VmConfig,
    delete_value,
    pending_delete_flags,
    section_values,
    set_value,
)
from qdisk.config.vmoptions import (
    DESCRIPTION_KEY,
    OPTION_SCHEMAS,
    InvalidOptionError,
    canonical_option,
    known_key,
)
from qdisk.errors import DriveError, InvalidInputError, QdiskError
from qdisk.outcome import DriveOutcome, Outcome
from qdisk.qemu.qmp import QmpCommandError
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.vm import live
from qdisk.vm.errors import InvalidPendingError
from qdisk.vm.volumes import drive_file, left_volume, remove_images

# qemu-server's fast-plug options: applied at once even while the VM runs.
FAST_PLUG_KEYS = frozenset({"name", "description", "onboot", "tags", "protection", "startup"})


@dataclass
class Messages:
    """What a change tells the user: ``notes`` on stdout, ``warnings`` on stderr."""

    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, other: Messages) -> None:
        self.notes += other.notes
        self.warnings += other.warnings


def check_pending(settings: Settings, config: VmConfig, *, replaced: Iterable[str] = ()) -> None:
    """Refuse to go on while a ``[PENDING]`` value (other than those ``replaced`` by the
    change at hand) would not be accepted by ``vm set``: applying it would put an invalid
    value, or a broken drive line, into the config the VM runs with."""
    skip = set(replaced)
    problems = []
    for key, text in section_values(config.pending).items():
        if key in skip:
            continue
        if key == "delete":
            problems += [f"delete: unknown option '{name}'" for name in pending_delete_flags(config)
                         if not known_key(name) and name not in skip]
        elif is_drive_key(key):
            try:
                parse_drive(key, text)
            except DriveError as error:
                problems += error.lines()
        elif key in OPTION_SCHEMAS or key == DESCRIPTION_KEY:
            try:
                canonical_option(key, text)
            except InvalidOptionError as error:
                problems += error.lines
        else:
            problems.append(f"unknown option '{key}'")
    if problems:
        path = settings.layout.vm_config(config.vmid)
        raise InvalidPendingError(
            f"VM {config.vmid}: invalid pending values in '{path}', nothing changed (correct "
            f"or delete them: --delete KEY, or edit the [PENDING] section):\n"
            + "\n".join(f"  {line}" for line in problems))


def free_volume(key: str, volid: str, storage_config: StorageConfig) -> Messages:
    try:
        path = Path(storage.resolve(storage_config, volid).path)
    except InvalidInputError as error:
        return Messages(warnings=[f"{volid}: volume not removed: {error}"])
    remove_images([path])
    return Messages(notes=[f"{key}: removed volume {volid} ({path})"])


def drop_unused_now(config: VmConfig, key: str, storage_config: StorageConfig) -> Messages:
    """Deleting ``unusedN`` frees its volume at once, as qemu-server does."""
    text = config.current.values.pop(key, None) or config.pending.values.pop(key, None)
    volid = None if text is None else left_volume(config, key, text)
    return Messages() if volid is None else free_volume(key, volid, storage_config)


def _register_unused(config: VmConfig, key: str, volid: str) -> str:
    """The VM's own disk that left ``key`` becomes ``unusedN``, so it is not lost
    (qemu-server's vmconfig_register_unused_drive)."""
    number = next(n for n in range(256) if f"unused{n}" not in config.current.values)
    config.current.values[f"unused{number}"] = volid
    return f"{key}: {volid} is now unused{number}"


def apply_pending(config: VmConfig, storage_config: StorageConfig) -> Messages:
    """Every pending change into the applied config (a stopped VM): a disk that leaves
    becomes ``unusedN``, or is freed when its deletion is forced (``!key``). The caller has
    checked the values (:func:`check_pending`)."""
    messages = Messages()
    for key, force in pending_delete_flags(config).items():
        old = config.current.values.get(key)
        delete_value(config.current, key)
        volid = left_volume(config, key, old) if old is not None and is_drive_key(key) else None
        if volid is None:
            continue
        if force:
            messages.add(free_volume(key, volid, storage_config))
        else:
            messages.warnings.append(_register_unused(config, key, volid))
    for key, value in section_values(config.pending).items():
        if key == "delete":
            continue
        old = config.current.values.get(key)
        set_value(config.current, key, value)
        if old is not None and is_drive_key(key) and drive_file(key, old) != drive_file(key, value):
            volid = left_volume(config, key, old)
            if volid is not None:
                messages.warnings.append(_register_unused(config, key, volid))
    config.pending = Section()
    return messages


def _apply_one(config: VmConfig, key: str, value: str) -> None:
    set_value(config.current, key, value)
    delete_value(config.pending, key)


@dataclass(frozen=True)
class HotplugResult:
    """What a running VM did with its pending drive changes (a refused or failed one stays
    pending), and notes for the user."""

    outcomes: tuple[DriveOutcome, ...] = ()
    notes: tuple[str, ...] = ()


def hotplug_pending(settings: Settings, config: VmConfig,
                    storage_config: StorageConfig) -> HotplugResult:
    """What a running VM can take now: fast-plug keys, and drive changes that keep the
    volume, through :mod:`qdisk.vm.live`. Everything else stays pending."""
    outcomes: list[DriveOutcome] = []
    notes: list[str] = []
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
                result = live.apply_drive_change(settings, config.vmid, old, new, storage_config)
            except QmpCommandError as error:
                outcomes.append(DriveOutcome(key, Outcome.REFUSED, reason=error.desc))
                continue
            except QdiskError as error:
                # QEMU's monitor failed (QEMU died?), or the volume no longer resolves: the
                # change waits for the next start, and the other keys still get their turn.
                outcomes.append(DriveOutcome(key, Outcome.FAILED, reason=str(error)))
                continue
            notes.extend(result.messages)
            pending = result.outcome is live.LiveOutcome.PENDING
            outcomes.append(DriveOutcome(key, Outcome.PENDING if pending else Outcome.APPLIED,
                                         result.messages))
            if not pending:
                _apply_one(config, key, value)
    return HotplugResult(tuple(outcomes), tuple(notes))

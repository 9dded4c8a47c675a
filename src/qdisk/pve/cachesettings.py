"""qdisk's qcow2 cache settings of a VM on pmxcfs: ``etc/pve/qdisk/<vmid>.conf``.

A stock qemu-server drops a drive line with a key it does not know (the disk vanishes
from the VM), so the six ``qcow2-*`` options never go into a VM config. They live in a
file of qdisk's own on the cluster file system, which follows the VM to every node::

    # qdisk: qcow2 cache settings of VM 100 (qdisk pve set), applied by its hookscript
    scsi0: qcow2-cache-size-based-on-disk=1
    virtio1: qcow2-l2-cache-size=64,qcow2-cache-clean-interval=30

One line per drive, in the drive language (:mod:`qdisk.config.drive`'s schema of the six keys
and their rules). A drive's settings apply on top of its line in the VM config: the
result is checked like ``vm set`` checks a drive, against its image too.

Writes follow Proxmox VE's discipline on pmxcfs: a cluster-wide lock is a directory
under ``etc/pve/priv/lock/`` (pmxcfs has no flock across nodes; making it fails while
the node has no quorum), held briefly and treated as stale after 120 s as pmxcfs does;
a file is written to a temporary name and renamed (a rename is atomic on pmxcfs, an
``O_TRUNC`` is not). pmxcfs sets modes from the path and refuses others, so no mode is
forced here (unlike :mod:`qdisk.system.fileio`'s private files).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from qdisk.cache.options import QCOW2_CACHE_KEYS
from qdisk.config import propstring
from qdisk.config.drive import Drive, is_drive_key, make_drive, schema_of
from qdisk.config.propstring import Schema, Value
from qdisk.config.text import BLANKS, read_config
from qdisk.errors import ConfigFileError, DriveError, Problem
from qdisk.pve.host import PveError, PveRefusedError, in_drive_order

# The drive schema's six qcow2 keys and the rules among them only.
_DRIVE_SCHEMA = schema_of("scsi0")
SETTINGS_SCHEMA = Schema(
    {name: _DRIVE_SCHEMA.properties[name] for name in QCOW2_CACHE_KEYS},
    rules=tuple(rule for rule in _DRIVE_SCHEMA.rules
                if set(rule.properties) <= set(QCOW2_CACHE_KEYS)))
# How long a writer waits for the lock, and when a lock counts as left behind (pmxcfs's
# own lock timeout, CFS_LOCK_TIMEOUT).
LOCK_TIMEOUT = 10.0
LOCK_STALE_AFTER = 120.0
# pmxcfs gives files of etc/pve (outside priv/) this mode whatever is asked.
PMXCFS_FILE_MODE = 0o640
PMXCFS_DIR_MODE = 0o755
_HEADER = "# qdisk: qcow2 cache settings of VM {vmid} (qdisk pve set), applied by its hookscript\n"

# A drive key -> its qcow2 options (typed, canonical order).
CacheSettings = dict[str, dict[str, Value]]


def has_cache_keys(key: str) -> bool:
    """Whether drive ``key`` can have the qcow2 options (ide, sata, scsi, virtio)."""
    return is_drive_key(key) and all(name in schema_of(key).properties for name in QCOW2_CACHE_KEYS)


def parse_settings_value(key: str, text: str) -> dict[str, Value]:
    """The options of one drive (``qcow2-l2-cache-size=64,...``); raises DriveError with
    every problem, each naming the drive and the option."""
    if not has_cache_keys(key):
        raise DriveError(key, [Problem(None, "not a disk drive key: the qcow2 cache options exist "
                                             "for ide0-3, sata0-5, scsi0-30 and virtio0-15")])
    propstring.check_length(key, text)
    checked = propstring.parse_property_string(SETTINGS_SCHEMA, text)
    propstring.check_rules(SETTINGS_SCHEMA.rules, checked)
    if not checked.problems and not checked.values:
        checked.add(None, f"no qcow2 cache option given (--delete {key} removes the drive's "
                          "settings)")
    if checked.problems:
        raise DriveError(key, checked.problems)
    return {name: checked.values[name]
            for name in propstring.canonical_order(SETTINGS_SCHEMA, checked.values)}


def print_settings_value(values: Mapping[str, Value]) -> str:
    return propstring.print_property_string(SETTINGS_SCHEMA, values)


def parse_settings(text: str, *, source: str) -> CacheSettings:
    """The settings in ``text`` (a file's); every bad line is an error naming ``source``
    and the line."""
    settings: CacheSettings = {}
    problems = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip(BLANKS)
        if not stripped or stripped.startswith("#"):
            continue
        key, colon, value = stripped.partition(":")
        key = key.strip(BLANKS)
        if not colon or key in settings:
            problems.append(f"{source}: line {number}: "
                            + ("a drive given twice" if colon else "not 'DRIVE: OPTIONS'"))
            continue
        try:
            settings[key] = parse_settings_value(key, value.strip(BLANKS))
        except DriveError as error:
            problems += [f"{source}: line {number}: {message}" for message in error.lines()]
    if problems:
        raise ConfigFileError("\n".join(problems))
    return settings


def print_settings(vmid: int, settings: Mapping[str, Mapping[str, Value]]) -> str:
    return _HEADER.format(vmid=vmid) + "".join(
        f"{key}: {print_settings_value(settings[key])}\n" for key in in_drive_order(settings))


def read_settings(path: Path, vmid: int) -> CacheSettings:
    """The settings file of VM ``vmid`` (none: no settings)."""
    try:
        text = read_config(path)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise PveError(f"VM {vmid}: cannot read '{path}': {error.strerror}") from None
    return parse_settings(text, source=str(path))


def with_settings(drive: Drive, values: Mapping[str, Value]) -> Drive:
    """The drive with its qcow2 options replaced by ``values``, checked with every rule of
    the drive language."""
    if not values and not any(name in drive.values for name in QCOW2_CACHE_KEYS):
        return drive
    kept = {name: value for name, value in drive.values.items() if name not in QCOW2_CACHE_KEYS}
    return make_drive(drive.key, {**kept, **values}).drive


# --- pmxcfs: the cluster lock and atomic writes ----------------------------------------------


@contextlib.contextmanager
def cluster_lock(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the cluster-wide lock ``path`` (a directory under ``etc/pve/priv/lock/``).

    Another holder is waited for up to ``timeout`` seconds (default :data:`LOCK_TIMEOUT`);
    a lock older than :data:`LOCK_STALE_AFTER` was left by a command that died, and is
    removed.
    """
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.mkdir(path, 0o700)
            break
        except FileExistsError:
            if not path.is_dir():
                raise PveRefusedError(f"{path}: not a directory, where the cluster lock is "
                                      f"taken: remove it") from None
            if _age(path) > LOCK_STALE_AFTER:
                _remove_stale(path)
                continue
            if time.monotonic() >= deadline:
                raise PveError(f"{path}: the lock is held by another command (on some node) for "
                               f"more than {timeout:g} s: try again") from None
            time.sleep(0.05)
        except FileNotFoundError:
            # A fresh cluster file system has no lock directory yet (Proxmox VE makes it too).
            os.makedirs(path.parent, 0o700, exist_ok=True)
        except OSError as error:
            raise PveError(f"{path}: cannot take the cluster lock: {error.strerror}"
                           + (" (the node has no quorum: the cluster file system is read-only)"
                              if error.errno == errno.EROFS else "")) from None
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)


def _remove_stale(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass  # another command removed it first
    except OSError as error:
        raise PveError(f"{path}: a lock left behind that cannot be removed: "
                       f"{error.strerror}") from None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def replace_file(path: Path, text: str | None) -> None:
    """Replace ``path`` on pmxcfs with ``text`` (None: remove it), as Proxmox VE does: a
    temporary file beside it, renamed over it. A link there is replaced, never followed."""
    try:
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        with contextlib.suppress(FileExistsError):
            os.mkdir(path.parent, PMXCFS_DIR_MODE)
        temporary = path.with_name(f"{path.name}.tmp.{os.getpid()}")
        # One of this process's name can only be left by a killed command of the same pid.
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     PMXCFS_FILE_MODE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise PveError(f"{error.filename or path}: cannot write: {error.strerror}") from None


def check_unlocked(vmid: int, lock: str | None) -> None:
    """Refuse a VM in the middle of an operation of Proxmox VE (its config's ``lock:``)."""
    if lock is not None:
        raise PveRefusedError(f"VM {vmid} is locked ({lock}): Proxmox VE is in the middle of "
                              f"an operation on it; try again when it is done")

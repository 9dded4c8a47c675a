"""``storage.cfg`` in the Proxmox VE format, and volume ids resolved to paths and formats.

The file holds one section per storage: a ``TYPE: ID`` line, then indented
``key value`` lines; a blank line ends the section::

    dir: local
            path /var/lib/vz
            content iso,images

Only the ``dir`` type is understood (``path``, ``content``, ``disable``); other
sections are kept verbatim so printing the file back loses nothing, and a volume on
them is refused. Volume ids resolve as PVE's directory plugin does:
``STORAGE:VMID/NAME`` -> ``<path>/images/<VMID>/<NAME>`` (the format is the name's
extension), ``STORAGE:iso/NAME`` -> ``<path>/template/iso/NAME`` (raw).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from qdisk.configtext import BLANKS, read_config
from qdisk.errors import InvalidInputError
from qdisk.fileio import atomic_write
from qdisk.propstring import INT64_MAX, STORAGE_ID_PATTERN, parse_boolean, whole_number
from qdisk.settings import Settings

# PVE's storage id (pve-storage-id) and volume id (parse_volume_id).
_STORAGE_ID_RE = re.compile(STORAGE_ID_PATTERN, re.IGNORECASE | re.ASCII)
_VOLUME_ID_RE = re.compile(rf"({STORAGE_ID_PATTERN}):(.+)", re.IGNORECASE | re.ASCII | re.DOTALL)
_SECTION_RE = re.compile(r"([a-z][a-z0-9]*):\s*(\S+)\s*", re.ASCII)
# An option line, its blanks stripped first (a lazy value before trailing blanks would take
# quadratic time on a run of them).
_OPTION_RE = re.compile(r"(\S+)(?:\s+(.*))?", re.ASCII | re.DOTALL)
# PVE::Storage::Plugin::parse_volname / parse_name_dir (whitespace is never part of a name).
# A linked clone is BASEVMID/BASENAME/VMID/NAME; its image lives under VMID. (No
# subvol: those are container volumes.)
_IMAGE_VOLNAME_RE = re.compile(r"(?:\d+/(?:base-)?[^/\s]+\.(?:raw|qcow2|vmdk)/)?"
                               r"(\d+)/((?:base-)?[^/\s]+\.(raw|qcow2|vmdk))")
_ISO_VOLNAME_RE = re.compile(r"iso/([^/]+\.(?:iso|img))", re.IGNORECASE)

# The directory plugin's content types when a section names none.
DEFAULT_DIR_CONTENT = ("images", "rootdir")


class StorageError(InvalidInputError):
    """storage.cfg is malformed, or a volume id cannot be resolved; names the storage or volume."""


@dataclass(frozen=True)
class Storage:
    """One section of storage.cfg; ``options`` are the raw ``key value`` lines in file order."""

    type: str
    id: str
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.options["path"])

    @property
    def content(self) -> tuple[str, ...]:
        text = self.options.get("content")
        if text is None:
            return DEFAULT_DIR_CONTENT
        return tuple(part for part in re.split(r"[,;\s]+", text) if part)

    @property
    def disabled(self) -> bool:
        return parse_boolean(self.options.get("disable", "0")) is True

    def allows(self, content: str) -> bool:
        return content in self.content


@dataclass(frozen=True)
class StorageConfig:
    storages: Mapping[str, Storage] = field(default_factory=dict)

    def get(self, storage_id: str) -> Storage:
        try:
            return self.storages[storage_id]
        except KeyError:
            raise StorageError(f"storage '{storage_id}' does not exist") from None


@dataclass(frozen=True)
class Volume:
    """What a drive's ``file`` names: ``path`` on the host, and the format the storage
    implies (None for an absolute path: the drive's ``format=`` decides)."""

    volid: str
    path: str
    format: str | None
    content: str | None = None  # "images" or "iso" for storage volumes
    storage: Storage | None = None


def config_path(settings: Settings) -> Path:
    return settings.home / "storage.cfg"


def load(settings: Settings) -> StorageConfig:
    """The storage configuration of ``settings.home``; no file means no storages."""
    path = config_path(settings)
    try:
        text = read_config(path)
    except FileNotFoundError:
        return StorageConfig()
    except OSError as error:
        raise StorageError(f"{path}: cannot read: {error.strerror}") from None
    return parse_storage_cfg(text, source=str(path))


def parse_storage_cfg(text: str, *, source: str = "storage.cfg") -> StorageConfig:
    storages: dict[str, Storage] = {}
    current: tuple[str, str, dict[str, str]] | None = None

    def finish() -> None:
        if current is not None:
            storage_type, storage_id, options = current
            storages[storage_id] = _checked(Storage(storage_type, storage_id, MappingProxyType(options)),
                                            source)

    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip(BLANKS):
            finish()
            current = None
            continue
        if line.lstrip(BLANKS).startswith("#"):
            continue
        if current is not None and line[0] in BLANKS:
            option = _OPTION_RE.fullmatch(line.strip(BLANKS))
            assert option is not None  # a non-blank line always matches
            key, value = option.group(1), option.group(2) or ""
            if key in current[2]:
                raise StorageError(f"{source}: line {number}: duplicate option '{key}' "
                                   f"in storage '{current[1]}'")
            current[2][key] = value
            continue
        section = _SECTION_RE.fullmatch(line)
        if section is None:
            raise StorageError(f"{source}: line {number}: expected 'TYPE: ID', got {line!r}")
        finish()
        storage_type, storage_id = section.groups()
        if not _STORAGE_ID_RE.fullmatch(storage_id):
            raise StorageError(f"{source}: line {number}: invalid storage id '{storage_id}'")
        if storage_id in storages:
            raise StorageError(f"{source}: line {number}: storage '{storage_id}' defined twice")
        current = (storage_type, storage_id, {})
    finish()
    return StorageConfig(MappingProxyType(storages))


def _checked(storage: Storage, source: str) -> Storage:
    if storage.type == "dir":
        path = storage.options.get("path")
        if not path:
            raise StorageError(f"{source}: storage '{storage.id}': missing 'path'")
        if not path.startswith("/"):
            raise StorageError(f"{source}: storage '{storage.id}': path '{path}' is not absolute")
    return storage


def print_storage_cfg(config: StorageConfig) -> str:
    sections = []
    for storage in config.storages.values():
        lines = [f"{storage.type}: {storage.id}"]
        lines += [f"\t{key} {value}".rstrip() for key, value in storage.options.items()]
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def _usable_dir_storage(config: StorageConfig, storage_id: str, *, context: str = "") -> Storage:
    """The storage, if qdisk can use it (an enabled ``dir`` storage); ``context`` prefixes
    the error (``volume 'local:...': ``)."""
    storage = config.get(storage_id)
    if storage.type != "dir":
        raise StorageError(f"{context}storage type '{storage.type}' is not supported "
                           f"(only 'dir')")
    if storage.disabled:
        raise StorageError(f"{context}storage '{storage_id}' is disabled")
    return storage


def parse_volume_id(volid: str) -> tuple[str, str] | None:
    """``(storage, volname)`` of a volume id, None for anything else (paths, none, cdrom)."""
    match = _VOLUME_ID_RE.fullmatch(volid)
    return (match.group(1), match.group(2)) if match else None


def resolve(config: StorageConfig, volid: str) -> Volume:
    """The host path and format of a drive's ``file`` (volume id or absolute path)."""
    if volid.startswith("/"):
        return Volume(volid, volid, None)
    parsed = parse_volume_id(volid)
    if parsed is None:
        raise StorageError(f"unable to parse volume ID '{volid}'")
    storage_id, volname = parsed
    storage = _usable_dir_storage(config, storage_id, context=f"volume '{volid}': ")
    image = _IMAGE_VOLNAME_RE.fullmatch(volname)
    if image is not None:
        vmid, name, fmt = image.groups()
        path = storage.path / "images" / vmid / name
        return Volume(volid, str(path), fmt, "images", storage)
    iso = _ISO_VOLNAME_RE.fullmatch(volname)
    if iso is not None:
        path = storage.path / "template" / "iso" / iso.group(1)
        return Volume(volid, str(path), "raw", "iso", storage)
    raise StorageError(f"volume '{volid}': unable to parse directory volume name '{volname}'")


# --- the default store and allocation ----------------------------------------------------

DEFAULT_STORAGE_ID = "local"
DEFAULT_STORAGE_CONTENT = "images,iso"
# qemu-server's allocation syntax of a drive's file: STORAGE:SIZE_IN_GiB (parse_drive's caller).
_ALLOCATION_RE = re.compile(rf"({STORAGE_ID_PATTERN}):(\d+)(?:\.(\d+))?", re.IGNORECASE | re.ASCII)
# The formats the directory plugin can allocate (its default is raw).
ALLOCATABLE_FORMATS = ("raw", "qcow2", "vmdk")
DEFAULT_ALLOCATION_FORMAT = "raw"
GIB = 1024**3
# The largest allocation: an image size is a 64-bit number of bytes in QEMU.
MAX_ALLOCATION_GIB = INT64_MAX // GIB


def ensure_default(settings: Settings) -> StorageConfig:
    """The storage configuration, first creating ``storage.cfg`` with one ``dir`` storage
    ``local`` at ``QDISK_HOME/storage/local`` when there is none, so a fresh home works."""
    path = config_path(settings)
    if not path.exists():
        local = Storage("dir", DEFAULT_STORAGE_ID, MappingProxyType({
            "path": str(settings.home.absolute() / "storage" / DEFAULT_STORAGE_ID),
            "content": DEFAULT_STORAGE_CONTENT}))
        atomic_write(path, print_storage_cfg(StorageConfig(MappingProxyType({local.id: local}))),
                     home=settings.home)
    return load(settings)


@dataclass(frozen=True)
class Allocation:
    """A drive file in the allocation syntax: a new image of ``size`` bytes on ``storage_id``."""

    storage_id: str
    size: int


def parse_allocation(file: str) -> Allocation | None:
    """``local:32`` / ``local:0.1`` -> an allocation (sizes in GiB, rounded up to whole KiB as
    pve-storage's KiB sizes are); None for anything else. Raises StorageError for a size
    beyond :data:`MAX_ALLOCATION_GIB`."""
    match = _ALLOCATION_RE.fullmatch(file)
    if match is None:
        return None
    storage_id, digits, fraction = match.groups()
    whole = whole_number(digits)
    if whole >= MAX_ALLOCATION_GIB:
        raise StorageError(f"'{file}': the size of a new disk must be less than "
                           f"{MAX_ALLOCATION_GIB} GiB (8 EiB)")
    kib = -(-int(float(f"{whole}.{fraction or 0}") * GIB) // 1024)
    return Allocation(storage_id, kib * 1024)


def image_dir(storage: Storage, vmid: int) -> Path:
    return storage.path / "images" / str(vmid)


def free_disk_volname(storage: Storage, vmid: int, fmt: str, *, taken: Iterable[str] = ()) -> str:
    """PVE's find_free_diskname: ``<vmid>/vm-<vmid>-disk-<n>.<fmt>`` with the first ``n``
    used by no file of that VM on the storage (whatever its format) and no name in ``taken``."""
    directory = image_dir(storage, vmid)
    used = {name.split(".")[0] for name in taken}
    if directory.is_dir():
        used.update(entry.name.split(".")[0] for entry in directory.iterdir())
    number = 0
    while f"vm-{vmid}-disk-{number}" in used:
        number += 1
    return f"{vmid}/vm-{vmid}-disk-{number}.{fmt}"


def allocatable_storage(config: StorageConfig, storage_id: str) -> Storage:
    """The storage named by an allocation, if it can hold new VM images."""
    storage = _usable_dir_storage(config, storage_id)
    if not storage.allows("images"):
        raise StorageError(f"storage '{storage_id}' does not support vm images")
    return storage


def owned_image(volid: str, vmid: int) -> bool:
    """Whether ``volid`` is one of the VM's own disks (``STORAGE:<vmid>/vm-<vmid>-disk-*``), the
    volumes that leave with the VM."""
    parsed = parse_volume_id(volid)
    return parsed is not None and re.fullmatch(
        rf"{vmid}/vm-{vmid}-disk-\d+\.(?:raw|qcow2|vmdk)", parsed[1]) is not None

"""``storage.cfg`` read, checked and printed as Proxmox VE's SectionConfig does.

The file holds one section per storage: a ``TYPE: ID`` line, then indented
``key value`` lines (a bare key is a boolean 1); ``#`` lines are comments and a blank
line ends the section::

    nfs: nas
            export /srv/pve
            server 10.0.0.5
            content images,iso

Every key is checked against its type's entry in :mod:`qdisk.storage.schema`. As
Proxmox VE's SectionConfig, a storage of a type qdisk does not know (a third-party plugin
such as LINSTOR's ``drbd``) and a property its type does not have (from a newer Proxmox
VE) are skipped with a warning naming the file and line; the skipped storage stays
known by id and type, so a volume on it is refused saying why (never silently missing),
and every other storage and VM works. Bad values, unsupported content types and formats,
missing required keys and malformed lines are errors naming the line. Options are kept
as written, in file order, so printing gives the file back; what Proxmox VE fills in on
read (the default content, ``shared`` of network storages, ``/mnt/pve/<id>``) is
derived, never added.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from qdisk.config.propstring import STORAGE_ID_PATTERN, parse_boolean
from qdisk.config.text import BLANKS, read_config
from qdisk.errors import InvalidInputError
from qdisk.settings import Settings
from qdisk.storage import values
from qdisk.storage.schema import PROPERTIES, TYPES, StorageType
from qdisk.system.fileio import atomic_write

_STORAGE_ID_RE = re.compile(STORAGE_ID_PATTERN, re.IGNORECASE | re.ASCII)
# SectionConfig's header and property lines.
_SECTION_RE = re.compile(r"(\S+):\s*(\S+)\s*", re.ASCII)
# An option line, its blanks stripped first (a lazy value before trailing blanks would take
# quadratic time on a run of them).
_OPTION_RE = re.compile(r"(\S+)(?:\s+(.*))?", re.ASCII | re.DOTALL)
# Where Proxmox VE mounts a network storage that names no path.
MOUNT_BASE = Path("/mnt/pve")
# The directory a StorageConfig parsed from text stands for (Ceph's conf and keyrings).
PVE_CONFIG_DIR = Path("/etc/pve")


class StorageError(InvalidInputError):
    """storage.cfg is malformed, or a volume id cannot be resolved; names the storage or volume."""


@dataclass(frozen=True)
class Storage:
    """One section of storage.cfg; ``options`` are the ``key value`` lines in file order
    (a bare key has the value ``""``)."""

    type: str
    id: str
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> StorageType:
        return TYPES[self.type]

    def flag(self, key: str) -> bool:
        value = self.options.get(key)
        return value is not None and (value == "" or parse_boolean(value) is True)

    @property
    def path(self) -> Path:
        """The mount point or directory (network file storages default to /mnt/pve/<id>)."""
        if "path" in self.options:
            return Path(self.options["path"])
        if self.kind.mount is not None:
            return MOUNT_BASE / self.id
        raise StorageError(f"storage '{self.id}' ({self.type}) has no path")

    @property
    def content(self) -> tuple[str, ...]:
        text = self.options.get("content")
        return self.kind.default_content if text is None else tuple(values.split_list(text))

    @property
    def disabled(self) -> bool:
        return self.flag("disable")

    @property
    def shared(self) -> bool:
        return self.kind.shared or self.flag("shared")

    @property
    def volume_chain(self) -> bool:
        """``snapshot-as-volume-chain``: snapshots are qcow2 overlays (qemu-server's 'mixed')."""
        return self.flag("snapshot-as-volume-chain")

    @property
    def formats(self) -> tuple[str, ...]:
        """The image formats its volumes can have; the first is the type's default."""
        if self.volume_chain and self.kind.chain_formats is not None:
            return self.kind.chain_formats
        return self.kind.formats

    @property
    def default_format(self) -> str:
        """The format of a new disk that names none: the storage's ``format``, else the type's
        (raw where the type holds no images, as pve-storage's storage_default_format)."""
        return self.options.get("format") or next(iter(self.formats), "raw")

    def allows(self, content: str) -> bool:
        return content in self.content


@dataclass(frozen=True)
class StorageConfig:
    """The storages by id; ``config_dir`` stands for /etc/pve (Ceph's conf and keyrings).
    ``skipped``: the storages of types qdisk does not know (id -> type); ``warnings``: what
    was skipped while reading, each naming the file and line."""

    storages: Mapping[str, Storage] = field(default_factory=dict)
    config_dir: Path = PVE_CONFIG_DIR
    skipped: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def get(self, storage_id: str) -> Storage:
        try:
            return self.storages[storage_id]
        except KeyError:
            if storage_id in self.skipped:
                raise StorageError(f"storage '{storage_id}' has type '{self.skipped[storage_id]}',"
                                   " which qdisk does not know") from None
            raise StorageError(f"storage '{storage_id}' does not exist") from None


def config_path(settings: Settings) -> Path:
    return settings.layout.storage_cfg


def load(settings: Settings) -> StorageConfig:
    """The storage configuration of ``settings.home``; no file means no storages. The home
    stands for /etc/pve: a Ceph storage's keyring is ``priv/ceph/<id>.keyring`` under it."""
    path = config_path(settings)
    try:
        text = read_config(path)
    except FileNotFoundError:
        return StorageConfig(config_dir=settings.home)
    except OSError as error:
        raise StorageError(f"{path}: cannot read: {error.strerror}") from None
    return parse_storage_cfg(text, source=str(path), config_dir=settings.home)


@dataclass
class _Section:
    type: str
    id: str
    line: int
    options: dict[str, str] = field(default_factory=dict)


def parse_storage_cfg(text: str, *, source: str = "storage.cfg",
                      config_dir: Path = PVE_CONFIG_DIR) -> StorageConfig:
    storages: dict[str, Storage] = {}
    skipped: dict[str, str] = {}
    warnings: list[str] = []
    section: _Section | None = None
    # Inside the section of a storage type qdisk does not know: its lines are skipped.
    skipping = False

    def finish() -> None:
        if section is not None:
            _check_required(section, source)
            storages[section.id] = Storage(section.type, section.id, MappingProxyType(section.options))

    # Lines end at '\n' only, as SectionConfig splits them (a '\r' before it is whitespace).
    for number, line in enumerate(text.split("\n"), 1):
        where = f"{source}: line {number}"
        if line.lstrip(BLANKS).startswith("#"):
            continue
        if not line.strip(BLANKS):
            finish()
            section, skipping = None, False
            continue
        if skipping and line[0] in BLANKS:
            continue
        if section is not None and line[0] in BLANKS:
            option = _OPTION_RE.fullmatch(line.strip(BLANKS))
            assert option is not None  # a non-blank line always matches
            key, value = option.group(1), option.group(2) or ""
            kind = TYPES[section.type]
            if key not in kind.keys:
                warnings.append(f"{where}: storage '{section.id}': unexpected property '{key}' "
                                f"(type {section.type} has: {', '.join(sorted(kind.keys))}): "
                                "ignored")
                continue
            error = _option_error(section, key, value)
            if error is not None:
                raise StorageError(f"{where}: storage '{section.id}': {error}")
            section.options[key] = value
            continue
        header = _SECTION_RE.fullmatch(line)
        if header is None:
            raise StorageError(f"{where}: expected 'TYPE: ID', got {line!r}")
        finish()
        section, skipping = None, False
        storage_type, storage_id = header.group(1).lower(), header.group(2)
        if not _STORAGE_ID_RE.fullmatch(storage_id):
            raise StorageError(f"{where}: storage ID '{storage_id}' contains illegal characters")
        if storage_id in storages or storage_id in skipped:
            raise StorageError(f"{where}: storage '{storage_id}' defined twice")
        if storage_type not in TYPES:
            skipped[storage_id] = storage_type
            skipping = True
            warnings.append(f"{where}: storage '{storage_id}' has type '{storage_type}', which "
                            "qdisk does not know: skipped (its volumes cannot be used by qdisk)")
            continue
        section = _Section(storage_type, storage_id, number)
    finish()
    return StorageConfig(MappingProxyType(storages), config_dir, MappingProxyType(skipped),
                         tuple(warnings))


def _option_error(section: _Section, key: str, value: str) -> str | None:
    """SectionConfig's check_value and pve-storage's decode_value, as one message."""
    kind = TYPES[section.type]
    problem = f"unable to parse value of '{key}': "
    if key in section.options:
        return problem + "duplicate attribute"
    check = PROPERTIES[key]
    if value == "":
        return None if check is values.boolean else problem + "got undefined value"
    error = check(value)
    if error is not None:
        return problem + error
    if key == "content":
        return _content_error(kind, values.split_list(value))
    if key == "format" and value not in kind.formats:
        return f"storage does not support format '{value}' (type {section.type} holds: " \
               f"{', '.join(kind.formats)})"
    return None


def _content_error(kind: StorageType, content: list[str]) -> str | None:
    unsupported = [part for part in content if part not in kind.content]
    if unsupported:
        return f"storage does not support content type '{unsupported[0]}' (type {kind.name} " \
               f"holds: {', '.join(kind.content)})"
    if "none" in content and len(set(content)) > 1:
        return "unable to combine 'none' with other content types"
    return None


def _check_required(section: _Section, source: str) -> None:
    missing = [key for key in TYPES[section.type].required if key not in section.options]
    if missing:
        raise StorageError(f"{source}: line {section.line}: storage '{section.id}': missing value "
                           f"for required option '{missing[0]}'")


def print_storage_cfg(config: StorageConfig) -> str:
    """The file as Proxmox VE writes it; gives back any file qdisk parsed that was
    written that way (tab indentation, one blank line between sections, no comments)."""
    sections = []
    for storage in config.storages.values():
        lines = [f"{storage.type}: {storage.id}"]
        lines += [f"\t{key} {value}".rstrip() for key, value in storage.options.items()]
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


DEFAULT_STORAGE_ID = "local"
DEFAULT_STORAGE_CONTENT = "images,iso"


def ensure_default(settings: Settings) -> StorageConfig:
    """The storage configuration, first creating ``storage.cfg`` with one ``dir`` storage
    ``local`` at ``QDISK_HOME/storage/local`` when there is none, so a fresh home works."""
    path = config_path(settings)
    if not path.exists():
        local = Storage("dir", DEFAULT_STORAGE_ID, MappingProxyType({
            "path": str(settings.layout.default_storage_dir),
            "content": DEFAULT_STORAGE_CONTENT}))
        atomic_write(path, print_storage_cfg(StorageConfig(MappingProxyType({local.id: local}))),
                     home=settings.home)
    return load(settings)

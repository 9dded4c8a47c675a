"""The volumes a VM config names, the images that belong to a VM, and their removal."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.config.drive import parse_drive
from qdisk.config.vmconfig import Section, VmConfig
from qdisk.errors import DriveError, InvalidInputError
from qdisk.image.info import read_image
from qdisk.settings import Tools
from qdisk.storage import StorageConfig

log = logging.getLogger(__name__)


def all_sections(config: VmConfig) -> tuple[Section, ...]:
    """The current values, ``[PENDING]`` and every snapshot: all that may name a volume."""
    return (config.current, config.pending, *config.snapshots.values())


def drive_file(key: str, text: str) -> str | None:
    """The ``file`` of a stored drive string (None if it does not parse)."""
    try:
        return parse_drive(key, text).drive.file
    except DriveError:
        return None


def drive_files(sections: Iterable[Section]) -> Iterator[tuple[str, str]]:
    """``(key, file)`` of every drive line in ``sections`` that parses."""
    for section in sections:
        for key, text in vmconfig.drive_items(section.values):
            file = drive_file(key, text)
            if file is not None:
                yield key, file


def volnames_on(config: VmConfig, storage_id: str) -> Iterator[str]:
    """Volume names on ``storage_id`` the config already names (so no new disk takes them)."""
    for _, file in drive_files(all_sections(config)):
        parsed = storage.parse_volume_id(file)
        if parsed is not None and parsed[0] == storage_id:
            yield parsed[1].rsplit("/", 1)[-1]


def users_of(config: VmConfig, volid: str) -> list[str]:
    """The keys of the current and pending values that use ``volid``."""
    return [key for key, file in drive_files((config.current, config.pending)) if file == volid]


def left_volume(config: VmConfig, key: str, text: str) -> str | None:
    """The volume of drive string ``text`` that just left ``key``, if it is the VM's own
    disk (no cdrom) and no other drive uses it: qemu-server keeps or frees only those."""
    try:
        drive = parse_drive(key, text).drive
    except DriveError:
        return None
    if drive.is_cdrom or not storage.owned_image(drive.file, config.vmid) \
            or users_of(config, drive.file):
        return None
    return drive.file


def owned_volumes(config: VmConfig) -> set[str]:
    """The VM's own volumes (``STORAGE:<vmid>/vm-<vmid>-disk-*``) its config names anywhere."""
    return {file for _, file in drive_files(all_sections(config))
            if storage.owned_image(file, config.vmid)}


def named_paths(config: VmConfig, storage_config: StorageConfig) -> list[Path]:
    """The host paths of every volume the config names that resolves."""
    paths = []
    for _, file in drive_files(all_sections(config)):
        try:
            paths.append(Path(storage.resolve(storage_config, file).path))
        except InvalidInputError:
            continue
    return paths


def images_named_for(storage_config: StorageConfig, vmid: int) -> Iterator[Path]:
    """Images on any usable storage whose name says they belong to VM ``vmid`` (what
    pve-storage's vdisk_list finds for it), whether a config names them or not."""
    name = re.compile(rf"(?:vm|base)-{vmid}-disk-\d+\.(?:raw|qcow2|vmdk)")
    for candidate in storage_config.storages.values():
        try:
            usable = storage.allocatable_storage(storage_config, candidate.id)
        except InvalidInputError:
            continue
        directory = storage.image_dir(usable, vmid)
        if directory.is_dir():
            yield from (path for path in directory.iterdir() if name.fullmatch(path.name))


def linked_clones(base: Path, tools: Tools) -> list[Path]:
    """The images in the storage's VM directories whose backing file is ``base``: linked
    clones of a template's disk, which pve-storage's vdisk_free will not leave without it."""
    target = base.resolve()
    clones = []
    for candidate in sorted(base.parent.parent.glob("*/*.qcow2")):
        try:
            backing = read_image(candidate, tools=tools, format="qcow2").backing_path
        except InvalidInputError:
            continue  # not an image a clone could be
        if backing is not None and Path(backing).resolve() == target:
            clones.append(candidate)
    return clones


def remove_images(paths: Iterable[Path]) -> None:
    """Remove images, and the VM's image directory they leave empty."""
    for path in paths:
        path.unlink(missing_ok=True)
        log.info("removed %s", path)
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()

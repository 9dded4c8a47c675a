"""New disks (qemu-server's ``STORAGE:SIZE``): where they may go and what they are named.

qdisk allocates on file storages (``dir``, ``nfs``, ``cifs``, ``btrfs``; ``cephfs``
holds no images), as pve-storage's alloc_image does there with ``qemu-img``. A network
storage must be mounted (pve-storage mounts it on activation; qdisk never mounts, it
refuses), and a ``dir`` storage with ``is_mountpoint`` must be a mount point. Block
storages need LVM, ZFS or Ceph tools and are refused with the reason.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qdisk.config.propstring import STORAGE_ID_PATTERN, parse_boolean
from qdisk.storage.config import Storage, StorageConfig, StorageError
from qdisk.storage.volumes import parse_volume_id, subdir, usable_storage
from qdisk.units import INT64_MAX, whole_number

# qemu-server's allocation syntax of a drive's file: STORAGE:SIZE_IN_GiB (parse_drive's caller).
_ALLOCATION_RE = re.compile(rf"({STORAGE_ID_PATTERN}):(\d+)(?:\.(\d+))?", re.IGNORECASE | re.ASCII)
# The formats qdisk can allocate on some storage (the storage's own formats decide).
ALLOCATABLE_FORMATS = ("raw", "qcow2", "vmdk")
DEFAULT_ALLOCATION_FORMAT = "raw"
GIB = 1024**3
# The largest allocation: an image size is a 64-bit number of bytes in QEMU.
MAX_ALLOCATION_GIB = INT64_MAX // GIB
# get_next_vm_diskname tries disk numbers 0..1023.
MAX_DISKS_PER_VM = 1024
MOUNTS = Path("/proc/mounts")
# /proc/mounts writes space, tab, newline and backslash as octal escapes.
_MOUNT_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


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


def allocatable_storage(config: StorageConfig, storage_id: str, *, mounts: Path = MOUNTS) -> Storage:
    """The storage named by an allocation, if qdisk can create VM images on it now."""
    storage = usable_storage(config, storage_id)
    refused = storage.kind.allocation_refused
    if refused is not None:
        raise StorageError(f"storage '{storage_id}' (type {storage.type}): cannot allocate a disk "
                           f"there: it {refused}")
    if not storage.allows("images"):
        raise StorageError(f"storage '{storage_id}' does not support vm images")
    check_mounted(storage, mounts=mounts)
    return storage


def check_mounted(storage: Storage, *, mounts: Path = MOUNTS) -> None:
    """Refuse a network storage whose share is not mounted at its path, and a directory
    storage with ``is_mountpoint`` that is not a mount point (pve-storage's activation)."""
    path = os.path.normpath(storage.path)
    mount = storage.kind.mount
    if mount is not None:
        source = mount.source.format_map(defaultdict(str, storage.options)) if mount.source else None
        if not any(re.fullmatch(mount.types, kind) and mountpoint == path
                   and (source is None or device.rstrip("/") == source.rstrip("/"))
                   for device, mountpoint, kind in _mount_table(mounts)):
            what = f"{source} " if source else ""
            raise StorageError(f"storage '{storage.id}' is not mounted: {what}at {path} "
                               f"(qdisk does not mount {storage.type} storages: mount it first)")
        return
    mountpoint = _required_mountpoint(storage)
    if mountpoint is not None and not os.path.ismount(mountpoint):
        raise StorageError(f"unable to activate storage '{storage.id}' - directory is expected to "
                           f"be a mount point but is not mounted: '{mountpoint}'")


def _required_mountpoint(storage: Storage) -> str | None:
    """``is_mountpoint``: a boolean (the path itself) or the path that must be mounted."""
    value = storage.options.get("is_mountpoint")
    if value is None:
        return None
    flag = parse_boolean(value) if value else True
    if flag is None:
        return value
    return str(storage.path) if flag else None


def _mount_table(mounts: Path) -> list[tuple[str, str, str]]:
    """(device, mount point, type) of every line of /proc/mounts."""
    try:
        text = mounts.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise StorageError(f"{mounts}: cannot read: {error.strerror}") from None

    def unescape(field: str) -> str:
        return _MOUNT_ESCAPE_RE.sub(lambda match: chr(int(match.group(1), 8)), field)

    return [(unescape(fields[0]), unescape(fields[1]), fields[2])
            for fields in (line.split() for line in text.splitlines()) if len(fields) >= 3]


def image_dir(storage: Storage, vmid: int) -> Path:
    return subdir(storage, "images") / str(vmid)


def free_disk_volname(storage: Storage, vmid: int, fmt: str, *, taken: Iterable[str] = ()) -> str:
    """PVE's find_free_diskname: ``<vmid>/vm-<vmid>-disk-<n>.<fmt>`` with the lowest ``n``
    used by no image of that VM on the storage and no name in ``taken``. nfs and cifs
    count per format (their names match with the suffix), the others whatever the format.
    Refuses a format the storage cannot hold."""
    if fmt not in storage.formats:
        raise StorageError(f"storage '{storage.id}' (type {storage.type}) cannot hold {fmt} "
                           f"images (possible: {', '.join(storage.formats)})")
    directory = image_dir(storage, vmid)
    names = list(taken)
    if directory.is_dir():
        names += [entry.name for entry in directory.iterdir()]
    suffix = f".{fmt}" if storage.kind.disk_names_per_format else ""
    used = re.compile(rf"(?:vm|base|subvol|basevol)-{vmid}-disk-(\d+){re.escape(suffix)}")
    numbers = {int(match.group(1)) for name in names if (match := used.search(name))}
    number = next((n for n in range(MAX_DISKS_PER_VM) if n not in numbers), None)
    if number is None:
        raise StorageError(f"unable to allocate an image name for VM {vmid} in storage '{storage.id}'")
    return f"{vmid}/vm-{vmid}-disk-{number}.{fmt}"


def owned_image(volid: str, vmid: int) -> bool:
    """Whether ``volid`` is one of the VM's own disks on a file storage
    (``STORAGE:<vmid>/vm-<vmid>-disk-*``), the volumes that leave with the VM."""
    parsed = parse_volume_id(volid)
    return parsed is not None and re.fullmatch(
        rf"{vmid}/vm-{vmid}-disk-\d+\.(?:raw|qcow2|vmdk)", parsed[1]) is not None

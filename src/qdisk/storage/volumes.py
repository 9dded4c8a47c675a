"""Volume ids resolved to what QEMU opens, as each pve-storage plugin's parse_volname and
path do.

=============  ==============================================  ==========================
layout         volume names                                    path
=============  ==============================================  ==========================
dir, nfs,      ``100/vm-100-disk-0.qcow2``, linked clone       ``<path>/images/100/<file>``
cifs, cephfs   ``100/base-100-disk-0.raw/101/vm-101-disk-0.raw``
               ``iso/<name>.iso``                              ``<path>/template/iso/<name>``
btrfs          ``100/vm-100-disk-0.raw``                       ``<path>/images/100/vm-100-disk-0/disk.raw``
lvm, lvmthin   ``vm-100-disk-0`` (``.qcow2`` on a volume chain) ``/dev/<vgname>/<name>``
zfspool        ``vm-100-disk-0``, ``base-100-disk-0/vm-101-…``  ``/dev/zvol/<pool>/<name>``
zfs            as zfspool                                      ``iscsi://<portal>/<target>/<lun>``
rbd            as zfspool                                      krbd ``/dev/rbd-pve/<fsid>/<pool>/<name>``,
                                                               librbd ``rbd:<pool>/<name>:conf=…``
iscsi          ``0.0.1.scsi-<wwid>``                           ``/dev/disk/by-id/scsi-<wwid>``
iscsidirect    ``lun1``                                        ``iscsi://<portal>/<target>/1``
=============  ==============================================  ==========================

A content-dirs override moves a content type's directory. The format is the storage's:
the file name's extension on file storages (only the formats the type holds), raw on
block storages, except qcow2 LVs (``.qcow2``) on LVM with ``snapshot-as-volume-chain``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qdisk.config.propstring import STORAGE_ID_PATTERN
from qdisk.storage import remote, values
from qdisk.storage.config import Storage, StorageConfig, StorageError
from qdisk.storage.remote import IscsiLun, RbdImage
from qdisk.storage.schema import Layout

_VOLUME_ID_RE = re.compile(rf"({STORAGE_ID_PATTERN}):(.+)", re.IGNORECASE | re.ASCII | re.DOTALL)
# PVE::Storage::Plugin::parse_volname / parse_name_dir (whitespace is never part of a name).
# A linked clone is BASEVMID/BASENAME/VMID/NAME; its image lives under VMID. (No
# subvol: those are container volumes.)
_IMAGE_VOLNAME_RE = re.compile(r"(?:\d+/(?:base-)?[^/\s]+\.(?:raw|qcow2|vmdk)/)?"
                               r"(\d+)/((?:base-)?[^/\s]+\.(raw|qcow2|vmdk))")
_ISO_VOLNAME_RE = re.compile(r"iso/([^/]+\.(?:iso|img))", re.IGNORECASE)
# LVMPlugin's parse_lvm_name and parse_volname.
_LVM_NAME_RE = re.compile(r"[a-z0-9][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE | re.ASCII)
_LVM_VOLNAME_RE = re.compile(r"(?:vm|base)-\d+-\S+", re.ASCII)
# ZFSPoolPlugin's (and RBDPlugin's) parse_volname: a clone names its base first.
_ZVOL_VOLNAME_RE = re.compile(r"(?:(?:base|basevol)-\d+-\S+/)?((base|basevol|vm|subvol)-\d+-\S+)",
                              re.ASCII)
_RBD_VOLNAME_RE = re.compile(r"(?:base-\d+-\S+/)?((?:base)?(?:vm)?-\d+-\S+)", re.ASCII)
_ISCSI_VOLNAME_RE = re.compile(r"\d+\.\d+\.\d+\.(\S+)", re.ASCII)
_ISCSI_DIRECT_VOLNAME_RE = re.compile(r"lun(\d+)", re.ASCII)
# The plugins' subdirectories per content type (get_subdir).
_SUBDIRS = {"images": "images", "iso": "template/iso"}


@dataclass(frozen=True)
class Volume:
    """What a drive's ``file`` names: ``path`` is pve-storage's path (a file, a device, or
    a protocol string for QEMU's network drivers), ``format`` the format the storage
    implies (None for an absolute path: the drive's ``format=`` decides), ``remote`` what
    QEMU connects to when the volume is not a path on this host."""

    volid: str
    path: str
    format: str | None
    content: str | None = None  # "images" or "iso" for storage volumes
    storage: Storage | None = None
    remote: IscsiLun | RbdImage | None = None


def parse_volume_id(volid: str) -> tuple[str, str] | None:
    """``(storage, volname)`` of a volume id, None for anything else (paths, none, cdrom)."""
    match = _VOLUME_ID_RE.fullmatch(volid)
    return (match.group(1), match.group(2)) if match else None


def usable_storage(config: StorageConfig, storage_id: str, *, context: str = "") -> Storage:
    """The storage, if enabled; ``context`` prefixes the error (``volume 'local:...': ``)."""
    storage = config.get(storage_id)
    if storage.disabled:
        raise StorageError(f"{context}storage '{storage_id}' is disabled")
    return storage


def resolve(config: StorageConfig, volid: str) -> Volume:
    """The path, format and (for network volumes) connection of a drive's ``file``
    (volume id or absolute path)."""
    if volid.startswith("/"):
        return Volume(volid, volid, None)
    parsed = parse_volume_id(volid)
    if parsed is None:
        raise StorageError(f"unable to parse volume ID '{volid}'")
    storage_id, volname = parsed
    storage = usable_storage(config, storage_id, context=f"volume '{volid}': ")
    if ".." in volname.split("/"):
        # The plugins' \S+ would let a name climb out of its pool or directory.
        raise StorageError(f"volume '{volid}': '..' is not allowed in a volume name")
    return _RESOLVERS[storage.kind.layout](config, storage, volid, volname)


def subdir(storage: Storage, content: str) -> Path:
    """The directory of a content type on a file storage (``content-dirs`` overrides it)."""
    overrides = dict(entry.split("=", 1) for entry in
                     values.split_list(storage.options.get("content-dirs", "")))
    return storage.path / overrides.get(content, _SUBDIRS[content]).lstrip("/")


def image_path(storage: Storage, volname: str) -> Path:
    """Where an image volume of a file storage lives (btrfs: its subvolume's ``disk.raw``)."""
    vmid, name = volname.rsplit("/", 2)[-2:]
    directory = subdir(storage, "images") / vmid
    if storage.kind.layout is Layout.BTRFS:
        return directory / name.removesuffix(".raw") / "disk.raw"
    return directory / name


# How each plugin's parse_volname names itself in its error.
_VOLNAME_KIND = {Layout.DIR: "directory", Layout.BTRFS: "directory", Layout.LVM: "lvm",
                 Layout.ZFSPOOL: "zfs", Layout.ZFS_ISCSI: "zfs", Layout.RBD: "rbd",
                 Layout.ISCSI: "iscsi", Layout.ISCSI_DIRECT: "iscsi"}


def _unparsable(storage: Storage, volid: str, volname: str) -> StorageError:
    what = _VOLNAME_KIND[storage.kind.layout]
    return StorageError(f"volume '{volid}': unable to parse {what} volume name '{volname}'")


def _checked_format(storage: Storage, volid: str, fmt: str) -> str:
    if fmt not in storage.formats:
        chain = ", without snapshot-as-volume-chain" if storage.kind.chain_formats else ""
        raise StorageError(f"volume '{volid}': storage '{storage.id}' (type {storage.type}{chain}) "
                           f"holds only {', '.join(storage.formats)} volumes, not {fmt}")
    return fmt


def _images(storage: Storage, volid: str, path: str, fmt: str,
            remote_volume: IscsiLun | RbdImage | None = None) -> Volume:
    return Volume(volid, path, _checked_format(storage, volid, fmt), "images", storage, remote_volume)


def _file_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    image = _IMAGE_VOLNAME_RE.fullmatch(volname)
    if image is not None:
        if "images" not in storage.kind.content:
            raise StorageError(f"volume '{volid}': storage '{storage.id}' (type {storage.type}) "
                               f"holds no VM images")
        return _images(storage, volid, str(image_path(storage, volname)), image.group(3))
    iso = _ISO_VOLNAME_RE.fullmatch(volname)
    if iso is not None:
        return Volume(volid, str(subdir(storage, "iso") / iso.group(1)), "raw", "iso", storage)
    raise _unparsable(storage, volid, volname)


def _lvm_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    if not _LVM_NAME_RE.fullmatch(volname):
        raise StorageError(f"volume '{volid}': lvm name '{volname}' contains illegal characters")
    if not _LVM_VOLNAME_RE.fullmatch(volname):
        raise _unparsable(storage, volid, volname)
    fmt = "qcow2" if volname.endswith(".qcow2") else "raw"
    return _images(storage, volid, f"/dev/{storage.options['vgname']}/{volname}", fmt)


def _zvol_name(storage: Storage, volid: str, volname: str) -> tuple[str, str]:
    """(name, format) of a zvol volume name (subvol/basevol: container file systems)."""
    match = _ZVOL_VOLNAME_RE.fullmatch(volname)
    if match is None:
        raise _unparsable(storage, volid, volname)
    return match.group(1), "subvol" if match.group(2) in ("subvol", "basevol") else "raw"


def _zfspool_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    name, fmt = _zvol_name(storage, volid, volname)
    pool = storage.options["pool"]
    if fmt == "subvol":
        return _images(storage, volid, f"{storage.options.get('mountpoint', '/' + pool)}/{name}", fmt)
    return _images(storage, volid, f"/dev/zvol/{pool}/{name}", fmt)


def _zfs_iscsi_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    name, fmt = _zvol_name(storage, volid, volname)
    lun = remote.zfs_lun(config, storage, name, volid)
    return _images(storage, volid, lun.url, fmt, lun)


def _rbd_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    match = _RBD_VOLNAME_RE.fullmatch(volname)
    if match is None:
        raise _unparsable(storage, volid, volname)
    name = match.group(1)
    if storage.flag("krbd"):
        return _images(storage, volid, remote.krbd_device(config, storage, name, volid), "raw")
    image = remote.rbd_image(config, storage, name)
    return _images(storage, volid, image.path, "raw", image)


def _iscsi_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    match = _ISCSI_VOLNAME_RE.fullmatch(volname)
    if match is None:
        raise _unparsable(storage, volid, volname)
    return _images(storage, volid, f"/dev/disk/by-id/{match.group(1)}", "raw")


def _iscsi_direct_volume(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    match = _ISCSI_DIRECT_VOLNAME_RE.fullmatch(volname)
    if match is None:
        raise _unparsable(storage, volid, volname)
    lun = remote.iscsi_lun(storage, int(match.group(1)))
    return _images(storage, volid, lun.url, "raw", lun)


def _no_disks(config: StorageConfig, storage: Storage, volid: str, volname: str) -> Volume:
    raise StorageError(f"volume '{volid}': storage '{storage.id}' (type {storage.type}) holds "
                       f"{', '.join(storage.kind.content)}, not VM disks")


_RESOLVERS: dict[Layout, Callable[[StorageConfig, Storage, str, str], Volume]] = {
    Layout.DIR: _file_volume,
    Layout.BTRFS: _file_volume,
    Layout.LVM: _lvm_volume,
    Layout.ZFSPOOL: _zfspool_volume,
    Layout.ZFS_ISCSI: _zfs_iscsi_volume,
    Layout.RBD: _rbd_volume,
    Layout.ISCSI: _iscsi_volume,
    Layout.ISCSI_DIRECT: _iscsi_direct_volume,
    Layout.NONE: _no_disks,
}

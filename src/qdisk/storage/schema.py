"""Every storage type of Proxmox VE, declared once: its storage.cfg keys, content types,
image formats, volume layout and the qemu-server rules that depend on it.

Parsing, checking, volume resolution, allocation and rendering all read this table; a
fact about a type is written here and nowhere else. Keys and checks are pve-storage's
(each plugin's ``options`` and its properties' formats), see ``docs/storage.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from qdisk.storage import values
from qdisk.storage.values import Check

# The value check of every key any type has (pve-storage's propertyList is shared).
PROPERTIES: Mapping[str, Check] = MappingProxyType({
    "content": values.content_list,
    "nodes": values.node_list,
    "disable": values.boolean,
    "shared": values.boolean,
    "path": values.path,
    "content-dirs": values.content_dirs,
    "is_mountpoint": values.string,  # yes/no or the path that must be a mount point
    "create-base-path": values.boolean,
    "create-subdirs": values.boolean,
    "mkdir": values.boolean,
    "format": values.string,  # checked against the type's formats
    "preallocation": values.enum("off", "metadata", "falloc", "full"),
    "snapshot-as-volume-chain": values.boolean,
    "prune-backups": values.prune_backups,
    "max-protected-backups": values.integer(-1),
    "bwlimit": values.bwlimit,
    "server": values.server,
    "export": values.path,
    "options": values.mount_options,
    "share": values.string,
    "subdir": values.path,
    "username": values.string,
    "domain": values.string,
    "smbversion": values.enum("default", "2.0", "2.1", "3", "3.0", "3.11"),
    "monhost": values.portal_list,
    "fuse": values.boolean,
    "fs-name": values.string,
    "nocow": values.boolean,
    "vgname": values.vgname,
    "base": values.volume_id,
    "saferemove": values.boolean,
    "saferemove_throughput": values.string,
    "tagged_only": values.boolean,
    "thinpool": values.vgname,
    "pool": values.string,
    "blocksize": values.string,
    "sparse": values.boolean,
    "mountpoint": values.path,
    "portal": values.portal,
    "target": values.string,
    "iscsiprovider": values.enum("comstar", "istgt", "iet", "LIO"),
    "nowritecache": values.boolean,
    "comstar_hg": values.string,
    "comstar_tg": values.string,
    "lio_tpg": values.string,
    "zfs-base-path": values.path,
    "data-pool": values.string,
    "namespace": values.string,
    "krbd": values.boolean,
    "datastore": values.string,
    "fingerprint": values.string,
    "port": values.integer(1, 65535),
    "encryption-key": values.string,
    "master-pubkey": values.string,
    "skip-cert-verification": values.boolean,
})


class Layout(enum.Enum):
    """How a type's volume names map to paths (one resolver each in ``volumes``)."""

    DIR = "dir"  # <path>/images/<vmid>/<name>, <path>/template/iso/<name>
    BTRFS = "btrfs"  # raw images in a subvolume: <path>/images/<vmid>/<name>/disk.raw
    LVM = "lvm"  # /dev/<vg>/<name>
    ZFSPOOL = "zfspool"  # /dev/zvol/<pool>/<name>
    ZFS_ISCSI = "zfs"  # iscsi://<portal>/<target>/<lun>
    RBD = "rbd"  # krbd device or librbd
    ISCSI = "iscsi"  # /dev/disk/by-id/<name>
    ISCSI_DIRECT = "iscsidirect"  # iscsi://<portal>/<target>/<lun>
    NONE = "none"  # backups or imports only: no VM disks


class IoUring(enum.Enum):
    """qemu-server's storage_allows_io_uring_default."""

    YES = "yes"
    NO = "no"  # lvm, cifs: native with direct I/O, else threads
    NOT_KRBD_CACHED = "not-krbd-cached"  # rbd: not with krbd without direct I/O


@dataclass(frozen=True)
class Mount:
    """How /proc/mounts shows a network storage's share mounted at its path (pve-storage's
    nfs/cifs/cephfs_is_mounted): the file system type (a regex) and the device, written
    from the storage's options (None: any)."""

    types: str
    source: str | None = None


@dataclass(frozen=True)
class StorageType:
    """A storage type: ``required``/``optional`` keys, content types (and the default
    when a section names none), image formats (first = default; ``chain_formats`` with
    ``snapshot-as-volume-chain``), and the facts that follow from the type."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    content: tuple[str, ...]
    default_content: tuple[str, ...]
    formats: tuple[str, ...]
    layout: Layout
    chain_formats: tuple[str, ...] | None = None
    shared: bool = False  # shared=1 forced on read (network storages)
    mount: Mount | None = None  # network file storages: mounted at path, /mnt/pve/<id> by default
    io_uring: IoUring = IoUring.YES
    direct_io_option: str | None = None  # direct I/O by default only with this option (btrfs)
    disk_names_per_format: bool = False  # free disk names counted per format (nfs, cifs)
    allocation_refused: str | None = None  # why qdisk cannot allocate here (block storages)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.required + self.optional)

    @property
    def file_based(self) -> bool:
        return self.layout in (Layout.DIR, Layout.BTRFS)


_COMMON = ("content", "nodes", "disable")
_BACKUPS = ("prune-backups", "max-protected-backups", "bwlimit")
_DIRECTORIES = ("content-dirs", "create-base-path", "create-subdirs", "mkdir")
_IMAGES = ("format", "preallocation")
_NETWORK_FILE = ("path", "options", "snapshot-as-volume-chain", *_DIRECTORIES, *_IMAGES,
                 *_COMMON, *_BACKUPS)
_ALL_CONTENT = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")
_VM_CT = ("images", "rootdir")
_RAW = ("raw",)
_NEEDS = "needs the {} tools, which qdisk does not run"

TYPES: Mapping[str, StorageType] = MappingProxyType({t.name: t for t in (
    StorageType("dir", ("path",), ("is_mountpoint", "shared", "snapshot-as-volume-chain",
                                   *_DIRECTORIES, *_IMAGES, *_COMMON, *_BACKUPS),
                (*_ALL_CONTENT, "none"), _VM_CT, ("raw", "qcow2", "vmdk", "subvol"), Layout.DIR),
    StorageType("nfs", ("server", "export"), _NETWORK_FILE, _ALL_CONTENT, ("images",),
                ("raw", "qcow2", "vmdk"), Layout.DIR, shared=True, mount=Mount("nfs4?", "{server}:{export}"),
                disk_names_per_format=True),
    StorageType("cifs", ("server", "share"), ("subdir", "username", "domain", "smbversion",
                                              *_NETWORK_FILE),
                _ALL_CONTENT, ("images",), ("raw", "qcow2", "vmdk"), Layout.DIR, shared=True,
                mount=Mount("cifs|smb3", "//{server}/{share}{subdir}"), io_uring=IoUring.NO,
                disk_names_per_format=True),
    StorageType("cephfs", (), ("path", "monhost", "username", "subdir", "fuse", "fs-name",
                               "options", *_DIRECTORIES, *_COMMON, *_BACKUPS),
                ("vztmpl", "iso", "backup", "snippets", "import"), ("backup",), (), Layout.DIR,
                shared=True, mount=Mount(r"ceph|fuse\.ceph-fuse")),
    StorageType("btrfs", ("path",), ("nocow", "is_mountpoint", "shared", *_DIRECTORIES, *_IMAGES,
                                     *_COMMON, *_BACKUPS),
                (*_ALL_CONTENT, "none"), _VM_CT, ("raw", "subvol"), Layout.BTRFS,
                direct_io_option="nocow"),
    StorageType("lvm", ("vgname",), ("base", "saferemove", "saferemove_throughput", "tagged_only",
                                     "shared", "snapshot-as-volume-chain", "bwlimit", *_COMMON),
                _VM_CT, ("images",), _RAW, Layout.LVM, chain_formats=("qcow2", "raw"),
                io_uring=IoUring.NO, allocation_refused=_NEEDS.format("LVM")),
    StorageType("lvmthin", ("vgname", "thinpool"), ("bwlimit", *_COMMON), _VM_CT, _VM_CT, _RAW,
                Layout.LVM, allocation_refused=_NEEDS.format("LVM")),
    StorageType("zfspool", ("pool",), ("blocksize", "sparse", "mountpoint", "bwlimit", *_COMMON),
                _VM_CT, _VM_CT, ("raw", "subvol"), Layout.ZFSPOOL,
                allocation_refused=_NEEDS.format("ZFS")),
    StorageType("zfs", ("portal", "target", "pool", "iscsiprovider"),
                ("blocksize", "sparse", "nowritecache", "comstar_hg", "comstar_tg", "lio_tpg",
                 "zfs-base-path", "bwlimit", *_COMMON),
                ("images",), ("images",), _RAW, Layout.ZFS_ISCSI, shared=True,
                allocation_refused=_NEEDS.format("ZFS-over-iSCSI (ssh to the target)")),
    StorageType("rbd", (), ("pool", "data-pool", "namespace", "monhost", "username", "krbd",
                            "bwlimit", *_COMMON),
                _VM_CT, ("images",), _RAW, Layout.RBD, shared=True,
                io_uring=IoUring.NOT_KRBD_CACHED, allocation_refused=_NEEDS.format("Ceph")),
    StorageType("iscsi", ("portal", "target"), ("bwlimit", *_COMMON), ("images", "none"),
                ("images",), _RAW, Layout.ISCSI, shared=True,
                allocation_refused="holds only the target's existing LUNs"),
    StorageType("iscsidirect", ("portal", "target"), ("bwlimit", *_COMMON), ("images", "none"),
                ("images",), _RAW, Layout.ISCSI_DIRECT, shared=True,
                allocation_refused="holds only the target's existing LUNs"),
    StorageType("pbs", ("server", "datastore"), ("username", "fingerprint", "namespace", "port",
                                                 "encryption-key", "master-pubkey", *_COMMON,
                                                 *_BACKUPS),
                ("backup",), ("backup",), (), Layout.NONE, shared=True),
    StorageType("esxi", ("server", "username"), ("skip-cert-verification", "shared", *_COMMON),
                ("import",), ("import",), (), Layout.NONE),
)})

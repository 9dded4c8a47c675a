"""Volumes QEMU reaches over the network: Ceph RBD images (librbd) and iSCSI LUNs, and
the Ceph facts a krbd device path needs.

A Proxmox VE host keeps Ceph's configuration under /etc/pve: ``ceph.conf`` for the
cluster it runs itself, ``priv/ceph/<id>.conf`` and ``priv/ceph/<id>.keyring`` for a
storage with ``monhost`` (an external cluster). qdisk reads them under the
configuration's ``config_dir`` (QDISK_HOME, or /etc/pve for a file parsed on its own),
as pve-storage's ceph_connect_option does: QEMU gets ``ceph.conf`` for the cluster Proxmox
VE runs, an external cluster's conf only where that file exists (librbd then needs
none: ``monhost`` names the monitors); a keyring means cephx as its user.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

from qdisk.storage import values
from qdisk.storage.config import Storage, StorageConfig, StorageError

# RBDPlugin's default pool and user.
DEFAULT_POOL = "rbd"
DEFAULT_USER = "admin"
_FSID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass(frozen=True)
class IscsiLun:
    """A LUN QEMU's libiscsi opens itself (iscsidirect, ZFS over iSCSI)."""

    portal: str
    target: str
    lun: int

    @property
    def url(self) -> str:
        return f"iscsi://{self.portal}/{self.target}/{self.lun}"


@dataclass(frozen=True)
class RbdImage:
    """An image QEMU's librbd opens. ``monitors`` (host, port as written) and ``auth`` come
    only with ``monhost``; ``user`` and ``keyring`` only when the storage has a keyring;
    ``conf`` is None for an external cluster without a conf file."""

    pool: str
    image: str
    namespace: str | None
    conf: str | None
    monitors: tuple[tuple[str, str | None], ...]
    auth: str | None
    user: str | None
    keyring: str | None

    @property
    def path(self) -> str:
        """pve-storage's ``rbd:`` path (the legacy -drive ``file=``): every ``:`` inside
        the monitor list is escaped, IPv6 hosts are bracketed."""
        path = f"rbd:{rbd_path(self.pool, self.namespace, self.image)}"
        if self.conf is not None:
            path += f":conf={self.conf}"
        if self.monitors:
            hosts = ";".join((f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
                             for host, port in self.monitors)
            escaped = hosts.replace(":", "\\:")
            path += f":mon_host={escaped}:auth_supported={self.auth}"
        if self.keyring:
            path += f":id={self.user}:keyring={self.keyring}"
        return path


def rbd_path(pool: str, namespace: str | None, image: str) -> str:
    return "/".join(part for part in (pool, namespace, image) if part is not None)


def _ceph_files(config: StorageConfig, storage: Storage) -> tuple[Path, Path]:
    """(ceph conf, keyring) as ceph_connect_option finds them."""
    private = config.config_dir / "priv" / "ceph"
    conf = private / f"{storage.id}.conf" if "monhost" in storage.options \
        else config.config_dir / "ceph.conf"
    return conf, private / f"{storage.id}.keyring"


def rbd_image(config: StorageConfig, storage: Storage, image: str) -> RbdImage:
    conf, keyring = _ceph_files(config, storage)
    has_keyring = keyring.is_file()
    # ceph_connect_option: the managed cluster's ceph.conf always, an external one's if present.
    passed_conf = conf if "monhost" not in storage.options or conf.is_file() else None
    monitors = tuple(filter(None, (values.split_host_port(mon)
                                   for mon in values.split_list(storage.options.get("monhost", "")))))
    return RbdImage(
        pool=storage.options.get("pool", DEFAULT_POOL), image=image,
        namespace=storage.options.get("namespace"),
        conf=str(passed_conf) if passed_conf is not None else None, monitors=monitors,
        auth=("cephx" if has_keyring else "none") if monitors else None,
        user=storage.options.get("username", DEFAULT_USER) if has_keyring else None,
        keyring=str(keyring) if has_keyring else None)


def krbd_device(config: StorageConfig, storage: Storage, image: str, volid: str) -> str:
    """The device a krbd mapping creates: /dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>. The
    fsid comes from the cluster's conf (pve-storage asks the monitors, which qdisk cannot)."""
    conf, _ = _ceph_files(config, storage)
    fsid = _conf_fsid(conf)
    if fsid is None:
        raise StorageError(f"volume '{volid}': the krbd device path needs the Ceph cluster's fsid: "
                           f"no 'fsid' in the [global] section of {conf}")
    namespace = storage.options.get("namespace")
    return f"/dev/rbd-pve/{fsid}/{rbd_path(storage.options.get('pool', DEFAULT_POOL), namespace, image)}"


def _conf_fsid(conf: Path) -> str | None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(conf.read_text(encoding="utf-8"), source=str(conf))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    fsid = parser.get("global", "fsid", fallback=None)
    return fsid.strip().lower() if fsid is not None and _FSID_RE.fullmatch(fsid.strip()) else None


def iscsi_lun(storage: Storage, lun: int) -> IscsiLun:
    return IscsiLun(storage.options["portal"], storage.options["target"], lun)


def zfs_lun(config: StorageConfig, storage: Storage, name: str, volid: str) -> IscsiLun:
    """The LUN of a zvol exported by a ZFS-over-iSCSI target. pve-storage asks the target
    over ssh (comstar, istgt, iet, LIO); qdisk reads the answer from
    ``priv/zfs/<id>.luns`` (``NAME LUN`` lines) under the configuration directory."""
    table = config.config_dir / "priv" / "zfs" / f"{storage.id}.luns"
    try:
        lines = table.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) == 2 and fields[0] == name and fields[1].isdigit():
            return iscsi_lun(storage, int(fields[1]))
    raise StorageError(f"volume '{volid}': the LUN of '{name}' is known only to the iSCSI target "
                       f"'{storage.options['target']}': add the line '{name} <LUN>' to {table}")

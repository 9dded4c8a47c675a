"""qemu-server's rules for one drive, whatever its graph: the cache mode, aio, discard,
detect-zeroes and read-only of its nodes, its I/O limits, and the names of its nodes
(Blockdev.pm: ``f``/``e`` + 30 hex digits of sha256 of ``drive=<key>,[snap=<s>,]volid=<volid>``,
the throttle node ``drive-<key>`` over group ``throttle-drive-<key>``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from qdisk.config.drive import Drive, qemu_throttle_value
from qdisk.storage import Storage
from qdisk.storage.schema import IoUring

# Buses whose devices have no read-only property (qemu-server's drive_is_read_only).
_NO_READ_ONLY_BUSES = ("ide", "sata")


@dataclass(frozen=True)
class CacheMode:
    """A drive's ``cache=`` as QEMU options: the nodes' ``cache`` and the device's write cache."""

    direct: bool
    no_flush: bool
    write_cache: bool

    def as_node_option(self) -> dict[str, bool]:
        return {"direct": self.direct, "no-flush": self.no_flush}


@dataclass(frozen=True)
class ThrottleLimit:
    """One I/O limit: its drive key (``mbps_rd_max``), its name in a throttle group's
    ``limits`` and ``throttling.*`` (``bps-read-max``), its ``block_set_io_throttle``
    argument (``bps_rd_max``), and QEMU's value when unset (no limit; a burst length of
    1 s, since QEMU refuses 0)."""

    drive_key: str
    qemu_name: str
    legacy_name: str

    @property
    def unset_value(self) -> int:
        return 1 if self.drive_key.endswith("_max_length") else 0


def _throttle_table() -> tuple[ThrottleLimit, ...]:
    """qemu-server's throttle limits in its order: per direction (total, read, write)
    bandwidth, its burst, burst length, then the same for operations."""
    limits = []
    for suffix, name in (("", "-total"), ("_rd", "-read"), ("_wr", "-write")):
        for unit, drive_unit in (("bps", "mbps"), ("iops", "iops")):
            limits += [
                ThrottleLimit(f"{drive_unit}{suffix}", f"{unit}{name}", f"{unit}{suffix}"),
                ThrottleLimit(f"{drive_unit}{suffix}_max", f"{unit}{name}-max",
                              f"{unit}{suffix}_max"),
                ThrottleLimit(f"{unit}{suffix}_max_length", f"{unit}{name}-max-length",
                              f"{unit}{suffix}_max_length")]
    return tuple(limits)


THROTTLE_LIMITS = _throttle_table()


def cache_mode(drive: Drive, storage: Storage | None = None) -> CacheMode:
    """qemu-server's drive_uses_cache_direct and write cache: without ``cache=``, direct
    I/O except on cdroms and on a storage that needs an option for it (btrfs: nocow)."""
    mode = drive.get("cache")
    if mode is None:
        needs = storage.kind.direct_io_option if storage is not None else None
        direct = not drive.is_cdrom and (storage is None or needs is None or storage.flag(needs))
        return CacheMode(direct=direct, no_flush=False, write_cache=True)
    return CacheMode(direct=mode in ("none", "directsync"), no_flush=mode == "unsafe",
                     write_cache=mode not in ("writethrough", "directsync"))


def aio_mode(drive: Drive, storage: Storage | None = None) -> str:
    """qemu-server's aio_cmdline_option: explicit, else io_uring where the storage allows
    it by default, else native with direct I/O and threads without."""
    explicit = drive.get("aio")
    if explicit:
        return str(explicit)
    direct = cache_mode(drive, storage).direct
    if storage is None or _allows_io_uring(storage, direct=direct):
        return "io_uring"
    return "native" if direct else "threads"


def _allows_io_uring(storage: Storage, *, direct: bool) -> bool:
    """storage_allows_io_uring_default: io_uring hangs on LVM, fails on CIFS, and hangs on
    krbd without direct I/O."""
    rule = storage.kind.io_uring
    if rule is IoUring.NOT_KRBD_CACHED:
        return direct or not storage.flag("krbd")
    return rule is IoUring.YES


def detect_zeroes(drive: Drive) -> str:
    """qemu-server's detect_zeroes_cmdline_option."""
    if drive.get("detect_zeroes") is False:
        return "off"
    return "unmap" if drive.get("discard") == "on" else "on"


def discard_mode(drive: Drive) -> str:
    return "unmap" if drive.get("discard") == "on" else "ignore"


def is_read_only(drive: Drive, *, template: bool = False) -> bool:
    """ro, cdroms, and disks of templates (except on IDE/SATA, which cannot be read-only)."""
    return drive.get("ro") is True or drive.is_cdrom or template_read_only(drive, template=template)


def template_read_only(drive: Drive, *, template: bool) -> bool:
    """qemu-server's drive_is_read_only: a template's disks, except on IDE/SATA."""
    return template and drive.interface not in _NO_READ_ONLY_BUSES


def throttle_limits(drive: Drive) -> dict[str, int]:
    """The drive's I/O limits under QEMU's names (``bps-total``, ``iops-read-max``, ...), in
    qemu-server's order; MB/s become bytes/s (times 2^20, truncated)."""
    limits: dict[str, int] = {}
    for limit in THROTTLE_LIMITS:
        value = drive.get(limit.drive_key)
        # Perl truth, as qemu-server tests these: 0 means no limit.
        if value:
            limits[limit.qemu_name] = qemu_throttle_value(limit.drive_key, value)
    return limits


def top_node_name(drive_key: str) -> str:
    return f"drive-{drive_key}"


def throttle_group_id(drive_key: str) -> str:
    return f"throttle-drive-{drive_key}"


def node_name(prefix: str, drive_key: str, volid: str, *, backing_depth: int = 0,
              snapshot: str | None = None) -> str:
    """qemu-server's get_node_name: ``f`` (format) or ``e`` (file) + 30 hex digits of the
    hash of ``drive=<key>,[snap=<snapshot>,]volid=<volid>`` (qdisk's linked-clone backing
    nodes put ``backing=<depth>,`` where qemu-server puts ``snap=``)."""
    part = f"snap={snapshot}," if snapshot is not None else (
        f"backing={backing_depth}," if backing_depth else "")
    digest = hashlib.sha256(f"drive={drive_key},{part}volid={volid}".encode()).hexdigest()
    return prefix + digest[:30]


def throttle_group(drive: Drive) -> dict[str, Any]:
    return {"id": throttle_group_id(drive.key), "limits": throttle_limits(drive),
            "qom-type": "throttle-group"}

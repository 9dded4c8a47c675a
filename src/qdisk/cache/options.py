"""The six ``qcow2-*`` drive options, each described once: its drive key, QEMU's name, unit
and factor, range, where QEMU and the ``-drive`` string put it, whether it changes live.

Everything else derives from :data:`QCOW2_OPTIONS`: the drive schema
(:mod:`qdisk.config.drive`), the cache model's option names and parse order
(:mod:`qdisk.cache.model`, :mod:`qdisk.cache.syntax`), a drive's options in QEMU's units
(:mod:`qdisk.cache.binding`), the ``-drive`` string's order (:mod:`qdisk.qemu.drivestr`)
and what a running VM takes live (:mod:`qdisk.vm.live`). A new option is one more row.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from qdisk.units import MIB

# QEMU's cache-clean-interval is an unsigned int of seconds.
MAX_CACHE_CLEAN_INTERVAL = 2**32 - 1
# The Proxmox VE patch's limit for the cache sizes it takes in MiB.
MAX_CACHE_SIZE_MIB = 10240


class QemuSyntax(enum.Enum):
    """How QEMU reads the option's text in ``-drive``/``--image-opts``."""

    SIZE = "size"        # qemu_strtosz: suffixes k M G T P E, 0x
    NUMBER = "number"    # qemu_strtou64: hex, octal, decimal; -1 wraps


@dataclass(frozen=True)
class Qcow2Option:
    """One ``qcow2-*`` drive option."""

    drive_key: str
    # What a person calls it (the disk editor's label).
    label: str
    description: str
    # QEMU's qcow2 option (None: qdisk's own, never passed to QEMU as such).
    qemu_name: str | None = None
    # The drive's unit and its factor to QEMU's unit (MiB -> bytes).
    unit: str = ""
    factor: int = 1
    minimum: int | None = None
    maximum: int | None = None
    boolean: bool = False
    qemu_syntax: QemuSyntax | None = None
    # QEMU parses the options in the order of its QDict's hash buckets (tdb_hash % 512 in
    # qobject/qdict.c): with several bad values, the lowest rank is reported first.
    qemu_parse_rank: int | None = None
    # Where the Proxmox VE patch appends it to a legacy -drive string.
    drive_string_rank: int | None = None
    # Applied to a running VM by blockdev-reopen (False: waits for the next start).
    live: bool = True
    # One of the sizes the auto size replaces (the Proxmox VE patch refuses both together).
    replaced_by_auto_size: bool = False

    @property
    def field(self) -> str | None:
        """The :class:`qdisk.cache.model.CacheOptions` field (``l2_cache_size``)."""
        return None if self.qemu_name is None else self.qemu_name.replace("-", "_")


QCOW2_OPTIONS: tuple[Qcow2Option, ...] = (
    Qcow2Option("qcow2-cache-size", "Cache size", "qcow2 L2 and refcount cache together, in MiB.",
                qemu_name="cache-size", unit="MiB", factor=MIB, minimum=1,
                maximum=MAX_CACHE_SIZE_MIB, qemu_syntax=QemuSyntax.SIZE, qemu_parse_rank=1,
                drive_string_rank=0, replaced_by_auto_size=True),
    Qcow2Option("qcow2-cache-size-based-on-disk", "Size based on disk",
                "Size the qcow2 cache to cover the whole image.", boolean=True),
    Qcow2Option("qcow2-l2-cache-size", "L2 cache size", "qcow2 L2 cache size in MiB.",
                qemu_name="l2-cache-size", unit="MiB", factor=MIB, minimum=1,
                maximum=MAX_CACHE_SIZE_MIB, qemu_syntax=QemuSyntax.SIZE, qemu_parse_rank=4,
                drive_string_rank=1, replaced_by_auto_size=True),
    Qcow2Option("qcow2-l2-cache-entry-size", "L2 cache entry size",
                "Size of one qcow2 L2 cache entry in bytes (a power of two).",
                qemu_name="l2-cache-entry-size", unit="bytes", minimum=512, maximum=2 * MIB,
                qemu_syntax=QemuSyntax.SIZE, qemu_parse_rank=3, drive_string_rank=2),
    Qcow2Option("qcow2-refcount-cache-size", "Refcount cache size", "qcow2 refcount cache size in MiB.",
                qemu_name="refcount-cache-size", unit="MiB", factor=MIB, minimum=1,
                maximum=MAX_CACHE_SIZE_MIB, qemu_syntax=QemuSyntax.SIZE, qemu_parse_rank=0,
                drive_string_rank=3, replaced_by_auto_size=True),
    Qcow2Option("qcow2-cache-clean-interval", "Cache clean interval",
                "Free qcow2 cache entries unused this long, in seconds.",
                qemu_name="cache-clean-interval", unit="seconds", minimum=0,
                maximum=MAX_CACHE_CLEAN_INTERVAL, qemu_syntax=QemuSyntax.NUMBER,
                qemu_parse_rank=2, drive_string_rank=4),
)

BY_DRIVE_KEY: Mapping[str, Qcow2Option] = {option.drive_key: option for option in QCOW2_OPTIONS}
BY_QEMU_NAME: Mapping[str, Qcow2Option] = {option.qemu_name: option for option in QCOW2_OPTIONS
                                           if option.qemu_name is not None}
# The drive keys, in the order of the drive schema.
QCOW2_CACHE_KEYS: tuple[str, ...] = tuple(BY_DRIVE_KEY)
# The options QEMU takes, by QEMU name.
QEMU_OPTIONS: tuple[Qcow2Option, ...] = tuple(BY_QEMU_NAME.values())
QEMU_OPTION_NAMES: tuple[str, ...] = tuple(BY_QEMU_NAME)
# The one option that asks qdisk to size the cache from the image.
AUTO_SIZE_KEY = next(option.drive_key for option in QCOW2_OPTIONS if option.qemu_name is None)


def asks_for_something(value: object) -> bool:
    """Set, and not ``qcow2-cache-size-based-on-disk=0`` (``0`` of an integer key counts:
    ``qcow2-cache-clean-interval=0`` is a request, as the Proxmox VE patch's ``defined()``
    says)."""
    return value is not None and value is not False


def ignored_qcow2_keys(key: str, values: Mapping[str, object], fmt: str | None,
                       source: str = "") -> list[str]:
    """One warning per ``qcow2-*`` key of drive ``key`` that asks for something although the
    disk is not qcow2 (``fmt``; ``source`` says where the format came from): QEMU would
    refuse the option, so it is never passed."""
    if fmt == "qcow2":
        return []
    what = f"format is {fmt}{source}" if fmt else "drive is empty"
    return [f"{key}.{name}: has no effect: the drive's {what}, not qcow2"
            for name in QCOW2_CACHE_KEYS if asks_for_something(values.get(name))]


def _ordered(rank: Callable[[Qcow2Option], int | None]) -> list[Qcow2Option]:
    ranked = [(position, option) for option in QEMU_OPTIONS if (position := rank(option)) is not None]
    return [option for _, option in sorted(ranked, key=lambda item: item[0])]


def qemu_parse_order() -> list[Qcow2Option]:
    return _ordered(lambda option: option.qemu_parse_rank)


def drive_string_order() -> list[Qcow2Option]:
    return _ordered(lambda option: option.drive_string_rank)

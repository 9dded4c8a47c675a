"""The qcow2 metadata cache: the auto size, QEMU's model of options -> caches, advice.

Pure functions over image facts (:mod:`qdisk.image`). The model follows QEMU's
``read_cache_sizes`` and ``qcow2_update_options_prepare`` (block/qcow2.c) for QEMU >= 4.0
on Linux, checked against QEMU 7.2: where QEMU refuses a combination, the error carries
QEMU's exact message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol

from qdisk.errors import InvalidInputError, Problem
from qdisk.image import SECTOR_SIZE, ImageError, ImageInfo, l2_entry_bytes

KIB = 1024
MIB = 1024 * KIB
# DEFAULT_L2_CACHE_MAX_SIZE on Linux (QEMU >= 3.1; 8 MiB on other hosts).
DEFAULT_L2_CACHE_MAX_BYTES = 32 * MIB
# MIN_L2_CACHE_SIZE: QEMU keeps at least 2 L2 entries (slices).
MIN_L2_CACHE_ENTRIES = 2
# MIN_REFCOUNT_CACHE_SIZE: at least 4 refcount blocks (clusters), also the default.
MIN_REFCOUNT_CACHE_CLUSTERS = 4
# DEFAULT_CACHE_CLEAN_INTERVAL on Linux (QEMU >= 3.1).
DEFAULT_CACHE_CLEAN_INTERVAL = 600
# QEMU >= 4.0 uses slices of at most 4 KiB when the L2 cache does not cover the image.
PARTIAL_COVERAGE_ENTRY_BYTES = 4096
# 1 << MIN_CLUSTER_BITS: the smallest L2 cache entry.
MIN_ENTRY_BYTES = 512
INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
UINT64_LIMIT = 2**64
# A miss scans every entry (qcow2_cache_do_get): beyond QEMU's own default of 8192
# 4 KiB slices (32 MiB), entries below 4 KiB cost measurable CPU.
MANY_ENTRIES = DEFAULT_L2_CACHE_MAX_BYTES // PARTIAL_COVERAGE_ENTRY_BYTES
# The drive language gives cache sizes in MiB.
DRIVE_SIZE_UNIT = MIB


class QemuCacheError(InvalidInputError):
    """QEMU refuses the cache options; ``qemu_message`` is QEMU's exact text."""

    def __init__(self, qemu_message: str, *, filename: str | None = None) -> None:
        super().__init__(f"{filename}: {qemu_message}" if filename else qemu_message)
        self.qemu_message = qemu_message
        self.filename = filename


@dataclass(frozen=True)
class CacheOptions:
    """The qcow2 cache options of one node, in QEMU's units (bytes, seconds); None = not given."""

    cache_size: int | None = None
    l2_cache_size: int | None = None
    refcount_cache_size: int | None = None
    l2_cache_entry_size: int | None = None
    cache_clean_interval: int | None = None

    def as_qemu(self) -> dict[str, int]:
        """The options that are set, under QEMU's names (``{"l2-cache-size": 67108864}``)."""
        return {qemu_name(field.name): value for field in fields(self)
                if (value := getattr(self, field.name)) is not None}


def qemu_name(field_name: str) -> str:
    """``l2_cache_size`` -> ``l2-cache-size``."""
    return field_name.replace("_", "-")


QEMU_OPTION_NAMES = tuple(qemu_name(field.name) for field in fields(CacheOptions))
_SIZE_OPTIONS = frozenset(QEMU_OPTION_NAMES) - {"cache-clean-interval"}


@dataclass(frozen=True)
class AutoSize:
    """The seed's ``qcow2_cache_size_by_disk_size``: ``cache_size`` is what it passes to QEMU."""

    cache_size: int
    l2_cache_size: int
    refcount_cache_size: int


@dataclass(frozen=True)
class EffectiveCache:
    """What QEMU allocates for one qcow2 node (bytes, entries, seconds)."""

    virtual_size: int
    cluster_size: int
    needed_l2_cache_size: int
    # Bytes of one L2 entry: 16 with extended L2, else 8.
    l2_entry_bytes: int
    l2_cache_entry_size: int
    l2_cache_entries: int
    refcount_cache_entries: int
    cache_clean_interval: int

    @property
    def l2_cache_size(self) -> int:
        return self.l2_cache_entries * self.l2_cache_entry_size

    @property
    def refcount_cache_size(self) -> int:
        return self.refcount_cache_entries * self.cluster_size

    @property
    def l2_coverage(self) -> int:
        """Bytes of the virtual disk the L2 cache can map at once (at most the whole disk)."""
        mapped = self.l2_cache_size // self.l2_entry_bytes * self.cluster_size
        return min(self.virtual_size, mapped)

    @property
    def covers_disk(self) -> bool:
        return self.l2_coverage >= self.virtual_size


def _require_qcow2(image: ImageInfo) -> int:
    """The image's cluster size; other formats have no qcow2 cache."""
    if not image.is_qcow2 or image.cluster_size is None:
        raise ImageError(image.filename, f"is a {image.format} image: only qcow2 images have "
                                         "a metadata cache")
    return image.cluster_size


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _qemu_virtual_size(image: ImageInfo) -> int:
    """The virtual size as QEMU sees it: in whole sectors (bs->total_sectors)."""
    return image.virtual_size // SECTOR_SIZE * SECTOR_SIZE


def needed_l2_cache_size(image: ImageInfo) -> int:
    """Bytes of L2 cache that map the whole image, as QEMU computes it."""
    cluster_size = _require_qcow2(image)
    clusters = -(-_qemu_virtual_size(image) // cluster_size)
    return _round_up(clusters * image.l2_entry_bytes, cluster_size)


def auto_size(image: ImageInfo) -> AutoSize:
    """The seed's formula on the image's own virtual size, cluster size, refcount width and
    L2 entry size: each part at its minimum (2 / 4 clusters), rounded up to whole clusters."""
    cluster_size = _require_qcow2(image)
    refcount_bits = image.refcount_bits or 16
    return auto_size_for(image.virtual_size, cluster_size, refcount_bits, image.extended_l2)


def auto_size_for(virtual_size: int, cluster_size: int = 65536, refcount_bits: int = 16,
                  extended_l2: bool = False) -> AutoSize:
    """The seed's ``qcow2_cache_size_by_disk_size`` on given facts (exact integer arithmetic)."""
    cluster_squared = cluster_size * cluster_size
    l2_clusters = max(MIN_L2_CACHE_ENTRIES,
                      -(-virtual_size * l2_entry_bytes(extended_l2) // cluster_squared))
    refcount_clusters = max(MIN_REFCOUNT_CACHE_CLUSTERS,
                            -(-virtual_size * refcount_bits // (8 * cluster_squared)))
    l2_cache_size = l2_clusters * cluster_size
    refcount_cache_size = refcount_clusters * cluster_size
    return AutoSize(l2_cache_size + refcount_cache_size, l2_cache_size, refcount_cache_size)


def auto_size_or_fallback(image: ImageInfo | None, configured_size: int | None,
                          name: str) -> tuple[AutoSize, list[str]]:
    """The auto size of ``name`` from its image, or, while the image does not exist yet, from
    the configured ``size=`` (QEMU's default image layout assumed), with a warning."""
    if image is not None:
        warnings = []
        if configured_size is not None and configured_size != image.virtual_size:
            warnings.append(f"{name}: size={configured_size} differs from the image's virtual "
                            f"size {image.virtual_size}: the cache is sized from the image")
        return auto_size(image), warnings
    if configured_size is None:
        raise InvalidInputError(f"{name}: the image does not exist and no size= is given: "
                                "cannot size its cache")
    return auto_size_for(configured_size), [
        f"{name}: the image does not exist yet: its cache is sized from size={configured_size} "
        "with 64 KiB clusters and 16-bit refcounts assumed"]


def effective_cache(image: ImageInfo, options: CacheOptions, *,
                    allocation_limit: int | None = None) -> EffectiveCache:
    """What QEMU (>= 4.0, Linux) allocates for ``image`` with ``options``, or QEMU's error.

    ``allocation_limit``: the largest single allocation the host grants
    (:func:`host_allocation_limit`); a larger cache fails to open in QEMU.
    """
    cluster_size = _require_qcow2(image)

    def refuse(message: str) -> QemuCacheError:
        return QemuCacheError(message, filename=image.filename)

    for name, value in options.as_qemu().items():
        if name in _SIZE_OPTIONS and not 0 <= value < UINT64_LIMIT:
            raise refuse(_size_syntax_message(name))
    needed_l2 = needed_l2_cache_size(image)
    min_refcount = MIN_REFCOUNT_CACHE_CLUSTERS * cluster_size
    requested_l2 = options.l2_cache_size
    l2_bytes = min(needed_l2, DEFAULT_L2_CACHE_MAX_BYTES if requested_l2 is None else requested_l2)
    refcount_bytes = options.refcount_cache_size or 0
    combined = options.cache_size
    if combined is not None:
        if requested_l2 is not None and options.refcount_cache_size is not None:
            raise refuse("cache-size, l2-cache-size and refcount-cache-size may not be set at "
                         "the same time")
        if requested_l2 is not None and requested_l2 > combined:
            raise refuse("l2-cache-size may not exceed cache-size")
        if refcount_bytes > combined:
            raise refuse("refcount-cache-size may not exceed cache-size")
        if requested_l2 is not None:
            refcount_bytes = combined - l2_bytes
        elif options.refcount_cache_size is not None:
            # Not capped at the need: the rest of cache-size all goes to L2.
            l2_bytes = combined - refcount_bytes
        elif combined >= needed_l2 + min_refcount:
            l2_bytes, refcount_bytes = needed_l2, combined - needed_l2
        else:
            refcount_bytes = min(combined, min_refcount)
            l2_bytes = combined - refcount_bytes
    entry_bytes = options.l2_cache_entry_size
    if entry_bytes is None:
        entry_bytes = cluster_size if l2_bytes >= needed_l2 else min(
            cluster_size, PARTIAL_COVERAGE_ENTRY_BYTES)
    if not (MIN_ENTRY_BYTES <= entry_bytes <= cluster_size and _is_power_of_two(entry_bytes)):
        raise refuse(f"L2 cache entry size must be a power of two between {MIN_ENTRY_BYTES} and "
                     f"the cluster size ({cluster_size})")
    l2_entries = max(MIN_L2_CACHE_ENTRIES, l2_bytes // entry_bytes)
    if l2_entries > INT_MAX:
        raise refuse("L2 cache size too big")
    refcount_entries = max(MIN_REFCOUNT_CACHE_CLUSTERS, refcount_bytes // cluster_size)
    if refcount_entries > INT_MAX:
        raise refuse("Refcount cache size too big")
    if allocation_limit is not None and max(l2_entries * entry_bytes,
                                            refcount_entries * cluster_size) > allocation_limit:
        raise refuse("Could not allocate metadata caches")
    interval = options.cache_clean_interval
    if interval is None:
        interval = DEFAULT_CACHE_CLEAN_INTERVAL
    # QEMU reads the interval as uint64 (a negative number wraps) and needs an unsigned int.
    if not 0 <= interval <= UINT_MAX:
        raise refuse("Cache clean interval too big")
    return EffectiveCache(
        virtual_size=_qemu_virtual_size(image),
        cluster_size=cluster_size,
        needed_l2_cache_size=needed_l2,
        l2_entry_bytes=image.l2_entry_bytes,
        l2_cache_entry_size=entry_bytes,
        l2_cache_entries=l2_entries,
        refcount_cache_entries=refcount_entries,
        cache_clean_interval=interval,
    )


def host_allocation_limit(proc: str = "/proc") -> int | None:
    """The largest single allocation Linux grants (None: no limit or unknown).

    In the default heuristic overcommit mode, one allocation above RAM + swap fails; in
    strict mode, one above what is left of the commit limit.
    """
    try:
        with open(f"{proc}/sys/vm/overcommit_memory", encoding="ascii") as mode_file:
            mode = int(mode_file.read())
        with open(f"{proc}/meminfo", encoding="ascii") as meminfo_file:
            meminfo = {name: int(value.split()[0]) * KIB for name, value in
                       (line.split(":", 1) for line in meminfo_file if ":" in line)}
    except (OSError, ValueError):
        return None
    if mode == 0:
        return meminfo.get("MemTotal", 0) + meminfo.get("SwapTotal", 0) or None
    if mode == 2 and "CommitLimit" in meminfo:
        return max(0, meminfo["CommitLimit"] - meminfo.get("Committed_AS", 0))
    return None


def default_cache(image: ImageInfo) -> EffectiveCache:
    """QEMU's cache for ``image`` when no option is given."""
    return effective_cache(image, CacheOptions())


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


# --- QEMU's option syntax (-drive, --image-opts) --------------------------------------

_SIZE_SUFFIX_SHIFT = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
# qemu_strtosz: decimal (with a fraction only before a suffix) or hex (no suffix, no fraction).
_SIZE_RE = re.compile(r"\s*\+?(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<int>\d+)(?P<frac>\.\d*)?"
                      r"(?P<suffix>[bBkKmMgGtTpPeE])?)")
# qemu_strtou64 with base 0: hex, octal or decimal; a minus sign wraps around.
_NUMBER_RE = re.compile(r"\s*(?P<sign>[+-]?)(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<oct>0[0-7]*)"
                        r"|(?P<dec>[1-9]\d*))")


def _size_syntax_message(option: str) -> str:
    return f"Parameter '{option}' expects a non-negative number below 2^64"


def parse_qemu_size(option: str, text: str) -> int:
    """A size as QEMU parses it in ``-drive``/``--image-opts`` (suffixes k M G T P E, ``0x``)."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise QemuCacheError(_size_syntax_message(option))
    if match["hex"] is not None:
        return _in_size_range(option, text, int(match["hex"], 16))
    shift = _SIZE_SUFFIX_SHIFT[match["suffix"].lower()] if match["suffix"] else 0
    fraction = match["frac"]
    if fraction and fraction != "." and float(fraction) and not shift:
        # A fraction needs a unit to scale it.
        raise QemuCacheError(_size_syntax_message(option))
    # QEMU scales a 64-bit fixed-point fraction and rounds half up.
    fraction_fixed = int(float(fraction) * 2**64) if fraction and fraction != "." else 0
    scaled_fraction = fraction_fixed << shift
    value = (int(match["int"]) << shift) + (scaled_fraction >> 64) + ((scaled_fraction >> 63) & 1)
    return _in_size_range(option, text, value)


def _in_size_range(option: str, text: str, value: int) -> int:
    if value >= UINT64_LIMIT:
        raise QemuCacheError(f"Value '{text}' is out of range for parameter '{option}'")
    return value


def parse_qemu_number(option: str, text: str) -> int:
    """A number as QEMU parses it (``cache-clean-interval``): -1 wraps to 2^64 - 1."""
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        raise QemuCacheError(f"Parameter '{option}' expects a number")
    if match["hex"] is not None:
        magnitude = int(match["hex"], 16)
    elif match["oct"] is not None:
        magnitude = int(match["oct"], 8)
    else:
        magnitude = int(match["dec"])
    if magnitude >= UINT64_LIMIT:
        raise QemuCacheError(f"Value '{text}' is too large for parameter '{option}'")
    return (-magnitude) % UINT64_LIMIT if match["sign"] == "-" else magnitude


# QEMU parses the options in the order of its QDict's hash buckets (tdb_hash % 512 in
# qobject/qdict.c), so with several bad values this one is reported first.
_QEMU_PARSE_ORDER = ("refcount-cache-size", "cache-size", "cache-clean-interval",
                     "l2-cache-entry-size", "l2-cache-size")


def parse_cache_options(settings: Mapping[str, str]) -> CacheOptions:
    """Options given as QEMU's ``name=value`` text, checked like QEMU's qcow2 driver does."""
    for option in settings:
        if option not in QEMU_OPTION_NAMES:
            raise QemuCacheError(f"Block format 'qcow2' does not support the option '{option}'")
    values: dict[str, int] = {}
    for option in _QEMU_PARSE_ORDER:
        if option in settings:
            parse = parse_qemu_size if option in _SIZE_OPTIONS else parse_qemu_number
            values[option.replace("-", "_")] = parse(option, settings[option])
    return CacheOptions(**values)


# --- advice -----------------------------------------------------------------------------

def format_bytes(size: int) -> str:
    """A byte count for people: ``32 MiB``, ``1.5 GiB``, ``512 B``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def describe_options(options: Mapping[str, int]) -> str:
    """QEMU cache options for people: ``l2-cache-size 4 GiB, cache-clean-interval 30 s``."""
    return ", ".join(f"{name} {format_bytes(value) if name in _SIZE_OPTIONS else f'{value} s'}"
                     for name, value in options.items()) or "QEMU's defaults"


def coverage_percent(cache: EffectiveCache) -> float:
    if not cache.virtual_size:
        return 100.0
    return 100.0 * cache.l2_coverage / cache.virtual_size


def advise(image: ImageInfo, options: CacheOptions, cache: EffectiveCache) -> list[str]:
    """Notes beside the numbers of ``cache`` (the result of ``options`` on ``image``)."""
    advice: list[str] = []
    needed = cache.needed_l2_cache_size
    coverage = (f"covers {format_bytes(cache.l2_coverage)} of the {format_bytes(cache.virtual_size)}"
                f" disk ({coverage_percent(cache):.0f}%)")
    if cache.covers_disk:
        advice.append(f"the L2 cache ({format_bytes(cache.l2_cache_size)}) {coverage}")
    else:
        advice.append(f"the L2 cache ({format_bytes(cache.l2_cache_size)}) {coverage}: random I/O "
                      f"beyond that misses; {format_bytes(needed)} would cover the whole disk")
    if options.l2_cache_size is not None and options.l2_cache_size > needed:
        advice.append(f"l2-cache-size {format_bytes(options.l2_cache_size)} is above what the "
                      f"image needs ({format_bytes(needed)}): QEMU caps it silently")
    if options.cache_size is not None:
        advice.extend(_combined_size_advice(image, options, cache))
    if (cache.l2_cache_entry_size < PARTIAL_COVERAGE_ENTRY_BYTES
            and cache.l2_cache_entries > MANY_ENTRIES):
        advice.append(f"{cache.l2_cache_entries} L2 cache entries of "
                      f"{cache.l2_cache_entry_size} bytes: every miss scans all of them (CPU "
                      f"cost); an l2-cache-entry-size of {PARTIAL_COVERAGE_ENTRY_BYTES} or more "
                      "keeps misses cheap")
    allocated = image.allocated_l2_bytes
    if allocated is not None and cache.l2_cache_size > allocated:
        advice.append(f"the L2 cache reserves {format_bytes(cache.l2_cache_size)} of address "
                      f"space, but the image has {image.allocated_l2_tables} L2 tables allocated "
                      f"({format_bytes(allocated)}): all the memory the cache can really fill "
                      "until more of the image is written")
    return advice


def _combined_size_advice(image: ImageInfo, options: CacheOptions,
                          cache: EffectiveCache) -> list[str]:
    assert options.cache_size is not None
    needed = cache.needed_l2_cache_size
    if options.refcount_cache_size is not None and cache.l2_cache_size > needed:
        return [f"cache-size with refcount-cache-size gives L2 the rest "
                f"({format_bytes(cache.l2_cache_size)}), not capped at the need "
                f"({format_bytes(needed)}): {format_bytes(cache.l2_cache_size - needed)} of "
                "memory wasted"]
    if options.l2_cache_size is None and options.refcount_cache_size is None:
        # The refcount blocks of as many host clusters as the disk has: the auto size's part.
        useful_refcount = auto_size(image).refcount_cache_size
        if cache.refcount_cache_size > useful_refcount:
            return [f"cache-size {format_bytes(options.cache_size)} is above the need: L2 takes "
                    f"{format_bytes(cache.l2_cache_size)} and QEMU gives the rest "
                    f"({format_bytes(cache.refcount_cache_size)}) to the refcount cache, which "
                    f"never holds more than about {format_bytes(useful_refcount)}"]
    return []


# --- planning a chain -------------------------------------------------------------------

@dataclass(frozen=True)
class NodePlan:
    """The cache facts of one qcow2 image of a chain: each image has its own cache. Beside
    QEMU's default, what qdisk's auto size gives it (from its own header) and what Proxmox
    VE's rule gives it (every layer of a volume chain gets the top image's auto size)."""

    image: ImageInfo
    auto: AutoSize
    default: EffectiveCache
    advice: tuple[str, ...]
    auto_cache: EffectiveCache
    proxmox_cache: EffectiveCache


def memory(cache: EffectiveCache) -> int:
    """The address space QEMU reserves for a node's caches (L2 and refcount)."""
    return cache.l2_cache_size + cache.refcount_cache_size


def plan_node(image: ImageInfo, *, proxmox_size: int | None = None) -> NodePlan:
    """The plan of ``image``; ``proxmox_size``: the cache-size Proxmox VE's rule gives it
    (its own auto size when it is the top image)."""
    default = default_cache(image)
    auto = auto_size(image)
    auto_cache = effective_cache(image, CacheOptions(cache_size=auto.cache_size))
    proxmox_cache = effective_cache(image, CacheOptions(cache_size=proxmox_size or auto.cache_size))
    advice = [*advise(image, CacheOptions(), default),
              *_proxmox_advice(auto_cache, proxmox_cache), *_refcount_advice(image, auto)]
    return NodePlan(image, auto, default, tuple(advice), auto_cache, proxmox_cache)


def plan_chain(chain: Sequence[ImageInfo]) -> list[NodePlan]:
    """One plan per qcow2 image of ``chain`` (top first); other formats have no cache."""
    top = chain[0] if chain and chain[0].is_qcow2 else None
    proxmox_size = auto_size(top).cache_size if top is not None else None
    return [plan_node(image, proxmox_size=proxmox_size) for image in chain if image.is_qcow2]


def _proxmox_advice(auto: EffectiveCache, proxmox: EffectiveCache) -> list[str]:
    """How Proxmox VE's one size for every layer fits this one."""
    if memory(proxmox) == memory(auto):
        return []
    if not proxmox.covers_disk:
        return [f"Proxmox VE's size (the top image's, {format_bytes(memory(proxmox))}) covers "
                f"{coverage_percent(proxmox):.0f}% of this image; its own auto size "
                f"({format_bytes(memory(auto))}) covers all of it"]
    more = memory(proxmox) - memory(auto)
    if more > 0:
        return [f"Proxmox VE's size (the top image's, {format_bytes(memory(proxmox))}) reserves "
                f"{format_bytes(more)} more than this image's own auto size"]
    return [f"Proxmox VE's size (the top image's, {format_bytes(memory(proxmox))}) leaves the "
            f"refcount cache {format_bytes(proxmox.refcount_cache_size)} of the "
            f"{format_bytes(auto.refcount_cache_size)} this image's own auto size gives it"]


def _refcount_advice(image: ImageInfo, auto: AutoSize) -> list[str]:
    """Internal snapshots are where the refcount cache matters (QEMU's qcow2-cache notes:
    refcount blocks are needed when clusters are allocated or freed)."""
    snapshots = image.header.nb_snapshots if image.header is not None else 0
    if not snapshots:
        return []
    assert image.cluster_size is not None and image.refcount_bits is not None
    per_block = image.cluster_size * (image.cluster_size * 8 // image.refcount_bits)
    default = MIN_REFCOUNT_CACHE_CLUSTERS * per_block
    return [f"{snapshots} internal snapshot{'s' if snapshots > 1 else ''}: a write to a cluster "
            "a snapshot shares copies it and updates refcounts, and taking or deleting a "
            "snapshot updates the refcount of every allocated cluster; QEMU's default "
            f"refcount cache ({MIN_REFCOUNT_CACHE_CLUSTERS} clusters) covers "
            f"{format_bytes(default)} of the file, refcount-cache-size "
            f"{format_bytes(auto.refcount_cache_size)} covers all of it (the auto size "
            "includes it)"]


# --- drives -----------------------------------------------------------------------------

class CacheDrive(Protocol):
    """What this module needs of a ``qdisk.drive.Drive``."""

    @property
    def key(self) -> str: ...

    def get(self, name: str) -> bool | int | float | str | None: ...


# Drive key -> (CacheOptions field, the factor from drive units to QEMU's units).
DRIVE_CACHE_KEYS: Mapping[str, tuple[str, int]] = {
    "qcow2-cache-size": ("cache_size", DRIVE_SIZE_UNIT),
    "qcow2-l2-cache-size": ("l2_cache_size", DRIVE_SIZE_UNIT),
    "qcow2-refcount-cache-size": ("refcount_cache_size", DRIVE_SIZE_UNIT),
    "qcow2-l2-cache-entry-size": ("l2_cache_entry_size", 1),
    "qcow2-cache-clean-interval": ("cache_clean_interval", 1),
}
AUTO_SIZE_KEY = "qcow2-cache-size-based-on-disk"


def drive_cache_options(drive: CacheDrive) -> CacheOptions:
    """The drive's explicit ``qcow2-*`` keys in QEMU's units (MiB -> bytes)."""
    values: dict[str, int] = {}
    for key, (field_name, factor) in DRIVE_CACHE_KEYS.items():
        value = drive.get(key)
        if value is not None and not isinstance(value, bool):
            values[field_name] = int(value) * factor
    return CacheOptions(**values)


def uses_auto_size(drive: CacheDrive) -> bool:
    return drive.get(AUTO_SIZE_KEY) is True


def resolved_cache_options(drive: CacheDrive, image: ImageInfo | None,
                           configured_size: int | None = None) -> tuple[CacheOptions, list[str]]:
    """The options QEMU gets for the drive's top image: explicit keys, plus ``cache-size``
    from the auto size when ``qcow2-cache-size-based-on-disk`` is on; and warnings."""
    options = drive_cache_options(drive)
    if not uses_auto_size(drive):
        return options, []
    auto, warnings = auto_size_or_fallback(image, configured_size, drive.key)
    return replace(options, cache_size=auto.cache_size), warnings


# QEMU's message -> the drive key it concerns.
_QEMU_MESSAGE_KEYS = (
    ("L2 cache entry size", "qcow2-l2-cache-entry-size"),
    ("l2-cache-size may not exceed", "qcow2-l2-cache-size"),
    ("refcount-cache-size may not exceed", "qcow2-refcount-cache-size"),
    ("L2 cache size too big", "qcow2-l2-cache-size"),
    ("Refcount cache size too big", "qcow2-refcount-cache-size"),
    ("Cache clean interval", "qcow2-cache-clean-interval"),
)


def check_drive_cache(drive: CacheDrive, image: ImageInfo) -> list[Problem]:
    """Problems of the drive's cache keys that only its image reveals (the entry size against
    the cluster size, QEMU's refusals), as ``Problem``s for a ``DriveError``.

    Other formats ignore the keys (the caller warns, as qemu-server does): no problem here.
    """
    if not image.is_qcow2:
        return []
    options, _warnings = resolved_cache_options(drive, image)
    try:
        effective_cache(image, options)
    except QemuCacheError as error:
        return [Problem(_drive_key_of(error.qemu_message, options),
                        _drive_message(error.qemu_message, image, options))]
    return []


def _drive_key_of(qemu_message: str, options: CacheOptions) -> str:
    for fragment, key in _QEMU_MESSAGE_KEYS:
        if qemu_message.startswith(fragment):
            if key == "qcow2-l2-cache-size" and options.l2_cache_size is None:
                # Only cache-size was given: the L2 part comes from it.
                return "qcow2-cache-size"
            return key
    return "qcow2-cache-size"


def _drive_message(qemu_message: str, image: ImageInfo, options: CacheOptions) -> str:
    if qemu_message.startswith("L2 cache entry size"):
        return (f"value {options.l2_cache_entry_size} must be a power of two between "
                f"{MIN_ENTRY_BYTES} and the cluster size of {image.filename} "
                f"({image.cluster_size}): QEMU refuses it")
    return f"QEMU refuses the cache options of {image.filename}: {qemu_message}"

"""QEMU's model of the qcow2 metadata cache: options -> caches, and the auto size.

Pure functions over image facts (:mod:`qdisk.image.info`). The model follows QEMU's
``read_cache_sizes`` and ``qcow2_update_options_prepare`` (block/qcow2.c) for QEMU >= 4.0
on Linux, checked against QEMU 7.2: where QEMU refuses a combination, the error carries
QEMU's exact message and the option it concerns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from qdisk.cache.options import BY_QEMU_NAME, QEMU_OPTION_NAMES, QemuSyntax
from qdisk.errors import InvalidInputError
from qdisk.image.file import ImageError
from qdisk.image.info import ImageInfo
from qdisk.image.qcow2 import l2_entry_bytes
from qdisk.units import KIB, MIB

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


class QemuCacheError(InvalidInputError):
    """QEMU refuses the cache options; ``qemu_message`` is QEMU's exact text and ``option``
    the QEMU option it concerns."""

    def __init__(self, qemu_message: str, *, option: str, filename: str | None = None) -> None:
        super().__init__(f"{filename}: {qemu_message}" if filename else qemu_message)
        self.qemu_message = qemu_message
        self.option = option
        self.filename = filename


class CacheOptions:
    """The qcow2 cache options of one node, in QEMU's names and units (bytes, seconds); an
    option not given is absent. ``CacheOptions(l2_cache_size=64 * MIB)``."""

    __slots__ = ("_values",)

    def __init__(self, **given: int | None) -> None:
        values = {}
        for field_name, value in given.items():
            name = field_name.replace("_", "-")
            if name not in BY_QEMU_NAME:
                raise TypeError(f"CacheOptions: no qcow2 option '{name}'")
            if value is not None:
                values[name] = value
        # In the descriptor table's order, whatever order they were given in.
        self._values = {name: values[name] for name in QEMU_OPTION_NAMES if name in values}

    @classmethod
    def from_qemu(cls, options: Mapping[str, object]) -> CacheOptions:
        """The cache options among a node's QEMU options (``{"l2-cache-size": ...}``)."""
        return cls(**{name.replace("-", "_"): int(value) for name, value in options.items()
                      if name in BY_QEMU_NAME and isinstance(value, int)})

    def get(self, name: str) -> int | None:
        """The value of QEMU option ``name`` (``l2-cache-size``), None when not given."""
        return self._values.get(name)

    def as_qemu(self) -> dict[str, int]:
        """The options that are set, under QEMU's names (``{"l2-cache-size": 67108864}``)."""
        return dict(self._values)

    def replace(self, **given: int | None) -> CacheOptions:
        return CacheOptions(**{name.replace("-", "_"): value for name, value in self._values.items()},
                            **given)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheOptions) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"CacheOptions({', '.join(f'{k}={v}' for k, v in self._values.items())})"

    # The options the model computes with.
    @property
    def cache_size(self) -> int | None:
        return self.get("cache-size")

    @property
    def l2_cache_size(self) -> int | None:
        return self.get("l2-cache-size")

    @property
    def refcount_cache_size(self) -> int | None:
        return self.get("refcount-cache-size")

    @property
    def l2_cache_entry_size(self) -> int | None:
        return self.get("l2-cache-entry-size")

    @property
    def cache_clean_interval(self) -> int | None:
        return self.get("cache-clean-interval")


@dataclass(frozen=True)
class AutoSize:
    """The Proxmox VE patch's ``qcow2_cache_size_by_disk_size``: ``cache_size`` is what it
    passes to QEMU."""

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


def needed_l2_cache_size(image: ImageInfo) -> int:
    """Bytes of L2 cache that map the whole image, as QEMU computes it."""
    cluster_size = _require_qcow2(image)
    clusters = -(-image.virtual_size // cluster_size)
    return _round_up(clusters * image.l2_entry_bytes, cluster_size)


def auto_size(image: ImageInfo) -> AutoSize:
    """The Proxmox VE patch's formula on the image's own virtual size, cluster size, refcount width and
    L2 entry size: each part at its minimum (2 / 4 clusters), rounded up to whole clusters."""
    cluster_size = _require_qcow2(image)
    refcount_bits = image.refcount_bits or 16
    return auto_size_for(image.virtual_size, cluster_size, refcount_bits, image.extended_l2)


def auto_size_for(virtual_size: int, cluster_size: int = 65536, refcount_bits: int = 16,
                  extended_l2: bool = False) -> AutoSize:
    """The Proxmox VE patch's ``qcow2_cache_size_by_disk_size`` on given facts (exact integer arithmetic)."""
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

    Along QEMU's own seam: the sizes the options ask for (:func:`_read_cache_sizes`, its
    ``read_cache_sizes``), then the caches made of them (``qcow2_update_options_prepare``).
    ``allocation_limit``: the largest single allocation the host grants
    (:func:`host_allocation_limit`); a larger cache fails to open in QEMU.
    """
    cluster_size = _require_qcow2(image)
    l2_bytes, refcount_bytes, entry_bytes = _read_cache_sizes(image, options, cluster_size)
    if not (MIN_ENTRY_BYTES <= entry_bytes <= cluster_size and _is_power_of_two(entry_bytes)):
        raise _refusal(image, f"L2 cache entry size must be a power of two between "
                              f"{MIN_ENTRY_BYTES} and the cluster size ({cluster_size})",
                       "l2-cache-entry-size")
    # The L2 part comes from cache-size when l2-cache-size was not given.
    l2_option = ("l2-cache-size" if options.l2_cache_size is not None or options.cache_size is None
                 else "cache-size")
    l2_entries = max(MIN_L2_CACHE_ENTRIES, l2_bytes // entry_bytes)
    if l2_entries > INT_MAX:
        raise _refusal(image, "L2 cache size too big", l2_option)
    refcount_entries = max(MIN_REFCOUNT_CACHE_CLUSTERS, refcount_bytes // cluster_size)
    if refcount_entries > INT_MAX:
        raise _refusal(image, "Refcount cache size too big", "refcount-cache-size")
    if allocation_limit is not None and max(l2_entries * entry_bytes,
                                            refcount_entries * cluster_size) > allocation_limit:
        raise _refusal(image, "Could not allocate metadata caches", "cache-size")
    interval = options.cache_clean_interval
    if interval is None:
        interval = DEFAULT_CACHE_CLEAN_INTERVAL
    # QEMU reads the interval as uint64 (a negative number wraps) and needs an unsigned int.
    if not 0 <= interval <= UINT_MAX:
        raise _refusal(image, "Cache clean interval too big", "cache-clean-interval")
    return EffectiveCache(
        virtual_size=image.virtual_size,
        cluster_size=cluster_size,
        needed_l2_cache_size=needed_l2_cache_size(image),
        l2_entry_bytes=image.l2_entry_bytes,
        l2_cache_entry_size=entry_bytes,
        l2_cache_entries=l2_entries,
        refcount_cache_entries=refcount_entries,
        cache_clean_interval=interval,
    )


def _read_cache_sizes(image: ImageInfo, options: CacheOptions,
                      cluster_size: int) -> tuple[int, int, int]:
    """QEMU's read_cache_sizes: the L2 cache, refcount cache and L2 entry sizes the options
    ask for (``cache-size`` split between the two caches), or its refusal."""
    for name, value in options.as_qemu().items():
        if BY_QEMU_NAME[name].qemu_syntax is QemuSyntax.SIZE and not 0 <= value < UINT64_LIMIT:
            raise _refusal(image, size_syntax_message(name), name)
    needed_l2 = needed_l2_cache_size(image)
    min_refcount = MIN_REFCOUNT_CACHE_CLUSTERS * cluster_size
    requested_l2 = options.l2_cache_size
    l2_bytes = min(needed_l2, DEFAULT_L2_CACHE_MAX_BYTES if requested_l2 is None else requested_l2)
    refcount_bytes = options.refcount_cache_size or 0
    combined = options.cache_size
    if combined is not None:
        if requested_l2 is not None and options.refcount_cache_size is not None:
            raise _refusal(image, "cache-size, l2-cache-size and refcount-cache-size may not be "
                                  "set at the same time", "cache-size")
        if requested_l2 is not None and requested_l2 > combined:
            raise _refusal(image, "l2-cache-size may not exceed cache-size", "l2-cache-size")
        if refcount_bytes > combined:
            raise _refusal(image, "refcount-cache-size may not exceed cache-size",
                           "refcount-cache-size")
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
    return l2_bytes, refcount_bytes, entry_bytes


def _refusal(image: ImageInfo, message: str, option: str) -> QemuCacheError:
    return QemuCacheError(message, option=option, filename=image.filename)


# How long a read of the host's allocation limit is used (per /proc), and the reads.
ALLOCATION_LIMIT_TTL = 1.0
_allocation_limits: dict[str, tuple[float, int | None]] = {}


def host_allocation_limit(proc: str = "/proc") -> int | None:
    """The largest single allocation Linux grants (None: no limit or unknown), read again
    at most every :data:`ALLOCATION_LIMIT_TTL` seconds: the kernel's meminfo costs near a
    millisecond, more than the rest of an editor's preview.

    In the default heuristic overcommit mode, one allocation above RAM + swap fails; in
    strict mode, one above what is left of the commit limit.
    """
    now = time.monotonic()
    known = _allocation_limits.get(proc)
    if known is None or now - known[0] >= ALLOCATION_LIMIT_TTL:
        known = _allocation_limits[proc] = (now, _read_allocation_limit(proc))
    return known[1]


def _read_allocation_limit(proc: str) -> int | None:
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


def size_syntax_message(option: str) -> str:
    """QEMU's refusal of a size outside 0 .. 2^64 - 1."""
    return f"Parameter '{option}' expects a non-negative number below 2^64"

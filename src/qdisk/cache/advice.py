"""The qcow2 cache for people: options and coverage in words, advice beside the numbers,
and a plan per image of a chain (each image has its own cache)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qdisk.cache.model import (
    MANY_ENTRIES,
    MIN_REFCOUNT_CACHE_CLUSTERS,
    PARTIAL_COVERAGE_ENTRY_BYTES,
    AutoSize,
    CacheOptions,
    EffectiveCache,
    auto_size,
    default_cache,
    effective_cache,
)
from qdisk.cache.options import BY_QEMU_NAME, QemuSyntax
from qdisk.image.info import ImageInfo
from qdisk.units import format_bytes


def describe_options(options: Mapping[str, int]) -> str:
    """QEMU cache options for people: ``l2-cache-size 4 GiB, cache-clean-interval 30 s``."""
    return ", ".join(f"{name} {format_bytes(value) if _is_size(name) else f'{value} s'}"
                     for name, value in options.items()) or "QEMU's defaults"


def _is_size(qemu_name: str) -> bool:
    option = BY_QEMU_NAME.get(qemu_name)
    return option is not None and option.qemu_syntax is QemuSyntax.SIZE


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

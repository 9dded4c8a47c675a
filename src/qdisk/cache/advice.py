"""The qcow2 cache for people: options and coverage in words, advice beside the numbers,
and a plan per image of a chain (each image has its own cache)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qdisk.cache.model import (
    MANY_ENTRIES,
    PARTIAL_COVERAGE_ENTRY_BYTES,
    AutoSize,
    CacheOptions,
    EffectiveCache,
    auto_size,
    default_cache,
)
from qdisk.cache.options import BY_QEMU_NAME, QemuSyntax
from qdisk.image import ImageInfo
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
    """The cache facts of one qcow2 image of a chain: each image has its own cache."""

    image: ImageInfo
    auto: AutoSize
    default: EffectiveCache
    advice: tuple[str, ...]


def plan_node(image: ImageInfo) -> NodePlan:
    default = default_cache(image)
    return NodePlan(image, auto_size(image), default,
                    tuple(advise(image, CacheOptions(), default)))


def plan_chain(chain: Sequence[ImageInfo]) -> list[NodePlan]:
    """One plan per qcow2 image of ``chain`` (top first); other formats have no cache."""
    return [plan_node(image) for image in chain if image.is_qcow2]

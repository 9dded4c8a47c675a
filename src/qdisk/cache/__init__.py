"""The qcow2 metadata cache, along its seams:

- :mod:`.options`: the six ``qcow2-*`` drive options, each described once;
- :mod:`.model`: QEMU's rules, options -> caches (exact refusals), and the auto size;
- :mod:`.syntax`: QEMU's option syntax in ``-drive``/``--image-opts`` strings;
- :mod:`.advice`: the cache for people, and a plan per image of a chain;
- :mod:`.binding`: a drive's keys bound to its image.

The names most callers need are here.
"""

from qdisk.cache.advice import (
    NodePlan,
    advise,
    coverage_percent,
    describe_options,
    memory,
    plan_chain,
    plan_node,
)
from qdisk.cache.binding import (
    CacheDrive,
    check_drive_cache,
    drive_cache_options,
    resolved_cache_options,
    uses_auto_size,
)
from qdisk.cache.model import (
    DEFAULT_CACHE_CLEAN_INTERVAL,
    DEFAULT_L2_CACHE_MAX_BYTES,
    AutoSize,
    CacheOptions,
    EffectiveCache,
    QemuCacheError,
    auto_size,
    auto_size_for,
    auto_size_or_fallback,
    default_cache,
    effective_cache,
    host_allocation_limit,
    needed_l2_cache_size,
)
from qdisk.cache.options import AUTO_SIZE_KEY, QCOW2_CACHE_KEYS, QCOW2_OPTIONS, QEMU_OPTION_NAMES
from qdisk.cache.syntax import parse_cache_options, parse_qemu_number, parse_qemu_size

__all__ = [
    "AUTO_SIZE_KEY", "DEFAULT_CACHE_CLEAN_INTERVAL", "DEFAULT_L2_CACHE_MAX_BYTES", "QCOW2_CACHE_KEYS",
    "QCOW2_OPTIONS", "QEMU_OPTION_NAMES", "AutoSize", "CacheDrive", "CacheOptions", "EffectiveCache",
    "NodePlan", "QemuCacheError", "advise", "auto_size", "auto_size_for", "auto_size_or_fallback",
    "check_drive_cache", "coverage_percent", "default_cache", "describe_options",
    "drive_cache_options", "effective_cache", "host_allocation_limit", "memory", "needed_l2_cache_size",
    "parse_cache_options", "parse_qemu_number", "parse_qemu_size", "plan_chain", "plan_node",
    "resolved_cache_options", "uses_auto_size",
]

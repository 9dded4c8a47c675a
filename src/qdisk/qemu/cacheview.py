"""The qcow2 cache of a drive as a person sees it, the shapes every front end shows: per
layer of its chain (:func:`drive_layers`, the options read off the node graph a start and
a live change send to QEMU), the image's facts, the auto size and QEMU's default
(:func:`image_facts`), what QEMU makes of some options (:func:`cache_view`); the drive's
values as an editor shows them, its problems per property, and the editor's option
descriptors. The home's VMs (:mod:`qdisk.vm.cacheview`) and a Proxmox VE host's
(:mod:`qdisk.pve.cacheview`) fill them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qdisk.cache import (
    CacheOptions,
    QemuCacheError,
    auto_size,
    coverage_percent,
    effective_cache,
    host_allocation_limit,
)
from qdisk.cache.options import QCOW2_OPTIONS
from qdisk.config.drive import Drive, schema_of
from qdisk.config.propstring import format_value
from qdisk.errors import Problem
from qdisk.image.info import ImageInfo, read_image
from qdisk.qemu.nodes import Disk, format_node
from qdisk.qemu.reopen import backing_chain
from qdisk.settings import Tools

# A whole-string problem (no property) is reported under this name.
WHOLE_DRIVE = "drive"


@dataclass(frozen=True)
class Layer:
    """One qcow2 image of a drive's chain (depth 0: the drive's own) and the cache options
    its node gets."""

    depth: int
    image: ImageInfo
    options: CacheOptions


def drive_layers(disk: Disk, tools: Tools) -> list[Layer]:
    """The qcow2 layers of a drive with the options a start gives each (every backing node
    explicit, as a live change builds them)."""
    chain = backing_chain(format_node(disk, tools=tools, explicit_backing=True))
    return [Layer(depth, read_image(node["file"]["filename"], format="qcow2", tools=tools),
                  CacheOptions.from_qemu(node))
            for depth, node in enumerate(chain) if node["driver"] == "qcow2"]


def cache_view(image: ImageInfo, options: CacheOptions, allocation_limit: int | None) -> dict[str, Any]:
    """What QEMU makes of ``options`` on ``image``: the caches, the part of the disk the L2
    cache covers and the memory both take; or QEMU's refusal (``allocation_limit``:
    :func:`qdisk.cache.host_allocation_limit`, read once per request)."""
    try:
        cache = effective_cache(image, options, allocation_limit=allocation_limit)
    except QemuCacheError as error:
        return {"options": options.as_qemu(), "error": error.qemu_message}
    return {"options": options.as_qemu(),
            "l2-cache-size": cache.l2_cache_size,
            "l2-cache-entry-size": cache.l2_cache_entry_size,
            "refcount-cache-size": cache.refcount_cache_size,
            "cache-clean-interval": cache.cache_clean_interval,
            "memory": cache.l2_cache_size + cache.refcount_cache_size,
            "l2-coverage": cache.l2_coverage,
            "coverage-percent": round(coverage_percent(cache), 1),
            "covers-disk": cache.covers_disk}


def image_facts(layer: Layer, allocation_limit: int | None) -> dict[str, Any]:
    """A layer's image: its facts, the auto size, and QEMU's default cache on it."""
    image = layer.image
    auto = auto_size(image)
    return {"depth": layer.depth, "filename": image.filename, "virtual-size": image.virtual_size,
            "cluster-size": image.cluster_size, "extended-l2": image.extended_l2,
            "auto": {"cache-size": auto.cache_size, "l2-cache-size": auto.l2_cache_size,
                     "refcount-cache-size": auto.refcount_cache_size},
            "default": cache_view(image, CacheOptions(), allocation_limit)}


def errors_by_property(problems: Iterable[Problem]) -> dict[str, str]:
    """Problems as one message per property (``drive``: the string as a whole)."""
    messages: dict[str, list[str]] = {}
    for problem in problems:
        messages.setdefault(problem.property or WHOLE_DRIVE, []).append(problem.message)
    return {name: "; ".join(lines) for name, lines in messages.items()}


def drive_values(drive: Drive) -> dict[str, str]:
    """A drive's values as text, as its string writes them (what an editor's fields show)."""
    schema = schema_of(drive.key)
    return {name: format_value(schema.properties[name], value) for name, value in drive.values.items()}


def edited_layers(layers: Iterable[Layer]) -> list[dict[str, Any]]:
    """Per layer its facts and the cache its options give (``edited``)."""
    limit = host_allocation_limit()
    return [{**image_facts(layer, limit), "edited": cache_view(layer.image, layer.options, limit)}
            for layer in layers]


def option_descriptors() -> dict[str, dict[str, Any]]:
    """The qcow2 options of an editor, in the drive schema's order: label, type, range, unit
    and description of each, and whether the auto size replaces it."""
    properties = schema_of("scsi0").properties
    return {option.drive_key: {
        "label": option.label, "type": properties[option.drive_key].kind.value,
        "minimum": option.minimum, "maximum": option.maximum, "unit": option.unit,
        "description": option.description, "replaced-by-auto-size": option.replaced_by_auto_size}
        for option in QCOW2_OPTIONS}

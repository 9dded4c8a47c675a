"""The qcow2 cache of a VM's disks as a person sees it: per disk and per layer of its chain,
the image's facts, the auto size, QEMU's default, what a start gives and what the running
VM has; and the preview of a drive string being edited. Front ends (the web page, the
API) show these as they are.

The per-layer cache options are read off the node graph (:func:`qdisk.qemu.nodes.format_node`),
the same graph a start and a live change send to QEMU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from qdisk import storage, vmconfig
from qdisk.cache import (
    CacheOptions,
    QemuCacheError,
    auto_size,
    check_drive_cache,
    coverage_percent,
    effective_cache,
    host_allocation_limit,
    resolved_cache_options,
)
from qdisk.cache.options import QCOW2_OPTIONS
from qdisk.drive import Drive, check_drive_length, parse_drive, print_drive, schema_of
from qdisk.errors import DriveError, InvalidInputError, Problem
from qdisk.image import ImageInfo, read_image
from qdisk.propstring import format_value
from qdisk.qemu.nodes import Disk, backing_chain, format_node, resolve_disk
from qdisk.settings import Settings, Tools
from qdisk.storage import StorageConfig
from qdisk.vm import views
from qdisk.vm.state import VmState

# The buses whose drives carry the qcow2 cache keys.
CACHE_BUSES = ("ide", "sata", "scsi", "virtio")
# pve-storage's check_volume_access, for a path given by anyone but root.
ONLY_ROOT_PATHS = "only root can pass arbitrary filesystem paths"
# What `qemu-img create -f qcow2` makes when given no options (for a disk not yet allocated).
NEW_QCOW2_CLUSTER_SIZE = 65536
NEW_QCOW2_REFCOUNT_BITS = 16
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


def _applied_options(state: VmState | None, key: str) -> dict[str, CacheOptions]:
    """Filename -> the options qdisk applied to that node of the running VM's disk (the
    state file); a layer it did not name runs with QEMU's defaults."""
    nodes = state.disks.get(key, []) if state is not None else []
    return {node.filename: CacheOptions.from_qemu(node.cache) for node in nodes}


def _cache_disks(values: Mapping[str, str]) -> Iterator[Drive]:
    for key, text in vmconfig.drive_items(dict(values)):
        try:
            drive = parse_drive(key, text).drive
        except DriveError:
            continue
        if drive.interface in CACHE_BUSES and not drive.is_cdrom and drive.file != "none":
            yield drive


def disk_cache_plans(settings: Settings, vmid: int) -> list[dict[str, Any]]:
    """Per disk (pending values merged, as ``qm config``): its format, and per qcow2 layer
    the image's facts, the auto size, QEMU's default, what a start gives (``configured``)
    and, while the VM runs, what QEMU has (``applied``)."""
    merged = views.config_values(settings, vmid)
    vm_status = views.status(settings, vmid)
    storage_config = storage.load(settings)
    limit = host_allocation_limit()
    disks = []
    for drive in _cache_disks(merged):
        entry: dict[str, Any] = {"key": drive.key, "volume": drive.file, "format": None,
                                 "layers": []}
        try:
            disk = resolve_disk(drive, storage_config)
            entry["format"] = disk.format
            if disk.format == "qcow2":
                applied = _applied_options(vm_status.state, drive.key) if vm_status.running else None
                for layer in drive_layers(disk, settings.tools):
                    facts = image_facts(layer, limit)
                    facts["configured"] = cache_view(layer.image, layer.options, limit)
                    facts["applied"] = None if applied is None else cache_view(
                        layer.image, applied.get(layer.image.filename, CacheOptions()), limit)
                    entry["layers"].append(facts)
        except InvalidInputError as error:
            entry["error"] = str(error)
        disks.append(entry)
    return disks


# --- the preview of an edited drive ---------------------------------------------------------


def errors_by_property(problems: Iterable[Problem]) -> dict[str, str]:
    """Problems as one message per property (``drive``: the string as a whole)."""
    messages: dict[str, list[str]] = {}
    for problem in problems:
        messages.setdefault(problem.property or WHOLE_DRIVE, []).append(problem.message)
    return {name: "; ".join(lines) for name, lines in messages.items()}


def _new_image(allocation: storage.Allocation) -> ImageInfo:
    """The facts of a qcow2 image ``qemu-img create`` would make for an allocation."""
    return ImageInfo(filename=f"new image on {allocation.storage_id}", format="qcow2",
                     virtual_size=allocation.size, cluster_size=NEW_QCOW2_CLUSTER_SIZE,
                     refcount_bits=NEW_QCOW2_REFCOUNT_BITS)


def _preview_layers(drive: Drive, storage_config: StorageConfig,
                    settings: Settings) -> tuple[str | None, bool, list[Layer]]:
    """(the volume's format, whether the drive allocates a new image, its layers)."""
    allocation = storage.parse_allocation(drive.file)
    if allocation is not None:
        storage.allocatable_storage(storage_config, allocation.storage_id)
        fmt = str(drive.get("format") or storage_config.get(allocation.storage_id).default_format)
        if fmt != "qcow2":
            return fmt, True, []
        image = _new_image(allocation)
        return fmt, True, [Layer(0, image, resolved_cache_options(drive, image)[0])]
    disk = resolve_disk(drive, storage_config)
    if disk.format != "qcow2" or disk.existing_image is None:
        return disk.format, False, []
    return disk.format, False, drive_layers(disk, settings.tools)


def preview_drive(settings: Settings, key: str, text: str, *, host_paths: bool) -> dict[str, Any]:
    """What drive string ``text`` of drive ``key`` would give: its problems by property
    (``errors``), else its canonical form, its values as text, the volume's format and,
    per qcow2 layer, the cache it gets (``edited``). Without ``host_paths`` (root's
    right, as in Proxmox VE) only volumes of configured storages are looked at: a path
    is refused before anything is read, so nothing tells whether it exists."""
    check_drive_length(key, text)  # refused outright, not reported as the string's problem
    result: dict[str, Any] = {"disk": key, "errors": {}, "warnings": [], "format": None,
                              "new": False, "layers": []}
    try:
        parsed = parse_drive(key, text)
    except DriveError as error:
        result["errors"] = errors_by_property(error.problems)
        return result
    drive = parsed.drive
    if not host_paths and not _is_storage_volume(drive.file):
        result["errors"] = {"file": ONLY_ROOT_PATHS}
        return result
    result.update(drive=print_drive(drive), warnings=list(parsed.warnings),
                  values=drive_values(drive))
    try:
        result["format"], result["new"], layers = _preview_layers(
            drive, storage.load(settings), settings)
        problems = check_drive_cache(drive, layers[0].image) if layers else []
    except InvalidInputError as error:
        result["errors"] = {"file": str(error)}
        return result
    if problems:
        result["errors"] = errors_by_property(problems)
    result["layers"] = edited_layers(layers)
    return result


def _is_storage_volume(file: str) -> bool:
    """A volume (or a new one: ``local:4``) of a storage, not a host path."""
    return storage.parse_allocation(file) is not None or storage.parse_volume_id(file) is not None


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

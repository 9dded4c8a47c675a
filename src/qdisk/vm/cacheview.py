"""The qcow2 cache of the home's VMs' disks (:mod:`qdisk.qemu.cacheview`'s shapes): per disk
and per layer of its chain, what a start gives and what the running VM has; and the
preview of a drive string being edited. Front ends (the web page, the API) show these as
they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from qdisk import storage
from qdisk.cache import (
    CacheOptions,
    check_drive_cache,
    host_allocation_limit,
    resolved_cache_options,
)
from qdisk.config import vmconfig
from qdisk.config.drive import Drive, parse_drive, print_drive
from qdisk.config.propstring import check_length
from qdisk.errors import DriveError, InvalidInputError
from qdisk.image.info import ImageInfo
from qdisk.qemu.cacheview import (
    Layer,
    cache_view,
    drive_layers,
    drive_values,
    edited_layers,
    errors_by_property,
    image_facts,
)
from qdisk.qemu.nodes import resolve_disk
from qdisk.settings import Settings
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
    check_length(key, text)  # refused outright, not reported as the string's problem
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

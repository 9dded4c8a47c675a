"""The qcow2 cache of a Proxmox VE host's VM as the page shows it, in the shapes of
:mod:`qdisk.qemu.cacheview` (so one editor and one gauge serve both): per disk, its stored
settings and, per image of its chain, the facts, the auto size, QEMU's default and the
cache it has now (the audit's "now", :mod:`qdisk.pve.audit`); and the preview of a
drive's settings being edited, checked as ``pve set`` checks them
(:func:`qdisk.pve.changes.checked_drive`).
"""

from __future__ import annotations

from typing import Any

from qdisk.cache import CacheOptions, host_allocation_limit
from qdisk.config.drive import print_drive
from qdisk.config.propstring import check_length
from qdisk.config.text import BLANKS
from qdisk.errors import DriveError, InvalidInputError
from qdisk.pve.audit import DiskAudit, audit_vm
from qdisk.pve.cachesettings import parse_settings_value, print_settings_value, read_settings
from qdisk.pve.changes import checked_drive
from qdisk.pve.host import PveHost
from qdisk.qemu.cacheview import (
    WHOLE_DRIVE,
    Layer,
    cache_view,
    drive_layers,
    drive_values,
    edited_layers,
    errors_by_property,
    image_facts,
    option_descriptors,
)


def vm_cache(host: PveHost, node: str, vmid: int) -> dict[str, Any]:
    """VM ``vmid`` of ``node`` as the audit sees it, with its stored settings per drive
    (``settings``), the options' descriptors, and per qcow2 image of each disk the view
    of the cache it has ``now``."""
    vm = audit_vm(host, node, vmid)
    stored = read_settings(host.paths.cache_settings(vmid), vmid) if vm.problem is None else {}
    return {**vm.as_json(), "options": option_descriptors(),
            "settings": {key: print_settings_value(values) for key, values in stored.items()},
            "disks": [_disk_view(disk) for disk in vm.disks]}


def _disk_view(disk: DiskAudit) -> dict[str, Any]:
    limit = host_allocation_limit()
    layers = []
    for depth, layer in enumerate(disk.layers):
        if layer.effective is None:
            continue  # a raw image below: no cache
        options = CacheOptions.from_qemu(layer.options)
        layers.append({**image_facts(Layer(depth, layer.image, options), limit),
                       "now": cache_view(layer.image, options, limit)})
    return {**disk.as_json(), "layers": layers}


def preview_settings(host: PveHost, node: str, vmid: int, key: str, text: str) -> dict[str, Any]:
    """What the qcow2 settings ``text`` of drive ``key`` would give (blank: none, QEMU's
    defaults): their problems by property (``errors``), else the whole drive's values,
    the volume's format and, per qcow2 layer, the cache it gets (``edited``)."""
    check_length(key, text)  # refused outright, not reported as the string's problem
    result: dict[str, Any] = {"disk": key, "errors": {}, "warnings": [], "format": None,
                              "new": False, "layers": []}
    vm = host.load_vm(node, vmid)
    try:
        values = parse_settings_value(key, text) if text.strip(BLANKS) else {}
        drive, disk = checked_drive(host, vm, key, values, host.storage_config())
    except DriveError as error:
        result["errors"] = errors_by_property(error.problems)
        return result
    except InvalidInputError as error:
        result["errors"] = {WHOLE_DRIVE: str(error)}
        return result
    result.update(drive=print_drive(drive), values=drive_values(drive), format=disk.format,
                  settings=print_settings_value(values),
                  layers=edited_layers(drive_layers(disk, host.tools)))
    return result

"""Proxmox VE storages: ``storage.cfg`` of every type, volume ids resolved to what QEMU
opens, and the allocation of new disks.

============  ================================================================
module        what it holds
============  ================================================================
``schema``    the table of storage types: keys, checks, content, formats, rules
``values``    the value syntax of storage.cfg keys (pve-storage's formats)
``config``    parsing, checking and printing storage.cfg; ``Storage``
``volumes``   volume names and paths per type; ``Volume``, ``resolve``
``remote``    network volumes: Ceph RBD (librbd, krbd device paths), iSCSI LUNs
``allocation``  ``STORAGE:SIZE``, free disk names, mount checks
============  ================================================================
"""

from qdisk.storage.allocation import (
    ALLOCATABLE_FORMATS,
    DEFAULT_ALLOCATION_FORMAT,
    GIB,
    Allocation,
    allocatable_storage,
    check_mounted,
    free_disk_volname,
    image_dir,
    owned_image,
    parse_allocation,
)
from qdisk.storage.config import (
    DEFAULT_STORAGE_CONTENT,
    DEFAULT_STORAGE_ID,
    Storage,
    StorageConfig,
    StorageError,
    config_path,
    ensure_default,
    load,
    parse_storage_cfg,
    print_storage_cfg,
)
from qdisk.storage.remote import IscsiLun, RbdImage
from qdisk.storage.schema import TYPES, StorageType
from qdisk.storage.volumes import Volume, image_path, parse_volume_id, resolve

__all__ = [
    "ALLOCATABLE_FORMATS", "DEFAULT_ALLOCATION_FORMAT", "DEFAULT_STORAGE_CONTENT",
    "DEFAULT_STORAGE_ID", "GIB", "TYPES", "Allocation", "IscsiLun", "RbdImage", "Storage",
    "StorageConfig", "StorageError", "StorageType", "Volume", "allocatable_storage",
    "check_mounted", "config_path", "ensure_default", "free_disk_volname", "image_dir",
    "image_path", "load", "owned_image", "parse_allocation", "parse_storage_cfg",
    "parse_volume_id", "print_storage_cfg", "resolve",
]

"""What a storage holds: the storages with their space, and the volumes on one
(``GET /nodes/{node}/storage`` and ``.../content``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from qdisk.errors import InvalidInputError
from qdisk.image.info import read_image
from qdisk.settings import Settings
from qdisk.storage.config import Storage, ensure_default, load
from qdisk.storage.volumes import resolve


def storage_status(settings: Settings) -> list[dict[str, Any]]:
    """Every storage of storage.cfg as ``GET /nodes/{node}/storage`` lists it; ``dir``
    storages with the space of their file system."""
    result = []
    for item in ensure_default(settings).storages.values():
        entry: dict[str, Any] = {"storage": item.id, "type": item.type,
                                 "content": ",".join(item.content), "shared": 0,
                                 "enabled": 0 if item.disabled else 1, "active": 0}
        if item.type == "dir" and not item.disabled:
            try:
                space = os.statvfs(item.path)
            except OSError:
                pass  # not mounted or not made yet: listed, inactive
            else:
                total, avail = space.f_blocks * space.f_frsize, space.f_bavail * space.f_frsize
                entry.update(active=1, total=total, avail=avail,
                             used=total - space.f_bfree * space.f_frsize)
        result.append(entry)
    return result


def _candidate_volids(item: Storage) -> Iterator[str]:
    """Volume ids of the files under a ``dir`` storage's image and iso directories
    (resolving them decides which ones are volumes)."""
    images = item.path / "images"
    if images.is_dir():
        for owner in sorted(images.iterdir()):
            if owner.is_dir():
                yield from (f"{item.id}:{owner.name}/{path.name}" for path in sorted(owner.iterdir()))
    isos = item.path / "template" / "iso"
    if isos.is_dir():
        yield from (f"{item.id}:iso/{path.name}" for path in sorted(isos.iterdir()))


def storage_content(settings: Settings, storage_id: str, *, content: str | None = None,
                    vmid: int | None = None) -> list[dict[str, Any]]:
    """The volumes of a storage (``.../storage/{storage}/content``): volid, content type,
    format, virtual size and owning VM; ``content`` and ``vmid`` filter."""
    config = load(settings)
    item = config.get(storage_id)
    if item.type != "dir" or item.disabled:
        return []
    result = []
    for volid in _candidate_volids(item):
        try:
            volume = resolve(config, volid)
        except InvalidInputError:
            continue  # not a volume name the storage knows
        owner = volid.split(":", 1)[1].split("/", 1)[0]
        entry: dict[str, Any] = {"volid": volid, "content": volume.content, "format": volume.format}
        if owner.isdigit():
            entry["vmid"] = int(owner)
        try:
            entry["size"] = read_image(volume.path, format=volume.format, tools=settings.tools).virtual_size
        except InvalidInputError:
            pass  # a damaged image is still listed, without a size
        if (content is None or content == volume.content) and (vmid is None or entry.get("vmid") == vmid):
            result.append(entry)
    return result

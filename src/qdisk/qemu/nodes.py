"""The QEMU block node graph of one drive, built once as plain dicts.

Every way qdisk hands a disk to QEMU renders this graph: ``-blockdev`` JSON
(:mod:`qdisk.qemu.blockdev`), the legacy ``-drive`` string
(:mod:`qdisk.qemu.drivestr`), and QMP ``blockdev-reopen`` arguments
(:func:`qdisk.qemu.blockdev.reopen_options` of :func:`format_node`). So a live change can never drift from
what a restart would do. The graph of ``scsi0: local:100/vm-100-disk-0.qcow2`` with
``qcow2-cache-size-based-on-disk=1`` over a backing image::

    throttle  drive-scsi0        driver throttle, throttle-group throttle-drive-scsi0
     └ file   f<hash(scsi0)>     driver qcow2, cache, read-only, discard, detect-zeroes,
        │                        the qcow2 cache options (cache-size = auto size)
        ├ file     e<hash(scsi0)>   driver file, filename, aio, cache, ...
        └ backing  f<hash(scsi0, backing 1)>   read-only qcow2 node, cache-size = its auto size
           ├ file     e<hash(scsi0, backing 1)>
           └ backing  ...                       (one level per image of the chain)

As qemu-server (Blockdev.pm): node names are ``f`` (format) / ``e`` (file) + the first
30 hex digits of sha256(``drive=scsi0,volid=<volid>``); the throttle node is
``drive-scsi0`` and its group object ``throttle-drive-scsi0``. Every node gets
``read-only`` and, except cdroms, ``discard`` and ``detect-zeroes``; file and format
nodes get ``cache``.

Backing nodes are explicit only when the drive sizes its cache from the image (the
chain's images need their own sizes; otherwise QEMU opens the chain from the header
with its defaults). Their names hash ``drive=scsi0,backing=<depth>,volid=<volid>``
(depth 1 = the top's backing image; the ``backing=`` part sits where qemu-server puts
``snap=`` for its snapshot nodes), so they depend on the config only, not on where
the files are. Backing nodes are read-only and get only ``cache-size`` (explicit
sizes apply to the top image only); each gets the driver QEMU would open its image
with (the backing format its overlay's header names, else the probed one), so a raw
layer gets no qcow2 options. No image of the chain may use an external data file.

A qcow2 volume on a ``snapshot-as-volume-chain`` storage is qemu-server's volume chain
(:func:`volume_chain_layers`, files named by :mod:`qdisk.storage.chains`): explicit
backing nodes down to the oldest layer, named ``drive=scsi0,snap=<snap>,volid=<volid>``,
read-only only where the drive is, ``discard-no-unref`` and the drive's explicit cache
options on every layer; the auto size is each layer's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from qdisk import cache
from qdisk.cache.options import ignored_qcow2_keys
from qdisk.config.drive import IMAGE_FORMATS, Drive
from qdisk.errors import InvalidInputError
from qdisk.image.file import ImageError
from qdisk.image.info import DataFileError, ImageInfo, read_chain, refuse_external_data_file
from qdisk.qemu.rules import (
    aio_mode,
    cache_mode,
    detect_zeroes,
    discard_mode,
    is_read_only,
    node_name,
    throttle_group,
    throttle_group_id,
    top_node_name,
)
from qdisk.settings import Tools
from qdisk.storage import IscsiLun, RbdImage, Storage, StorageConfig, Volume, resolve
from qdisk.storage.chains import layer_snapshot

# A node as QEMU takes it: its options as a plain dict.
Node = dict[str, Any]
# The keys of a node qdisk reads back (the rest is QEMU's business).
NodeKeys = TypedDict("NodeKeys", {
    "node-name": str, "driver": str, "filename": str, "file": "NodeKeys", "backing": "NodeKeys",
    "read-only": bool, "detect-zeroes": str, "cache": dict[str, bool]}, total=False)
QemuVersion = tuple[int, ...]

# The port qemu-server gives a Ceph monitor that names none (msgr2).
CEPH_MON_PORT = "3300"
# qemu-server's get_cdrom_path (the first of its candidates).
HOST_CDROM = "/dev/cdrom"
# QEMU's protocol drivers for local files and devices, which QEMU accepts as a backing format.
_PROTOCOL_DRIVERS = ("file", "host_device", "host_cdrom")
# QEMU's image format drivers: each reads its image from a file child, as a node of the graph.
_IMAGE_FORMATS = ("qcow2", "raw", "qed", "vmdk", "vpc", "vhdx", "vdi", "luks", "parallels",
                  "bochs", "cloop", "dmg", "qcow")
# The deepest chain given a node per image. QEMU 7.2 has no limit of its own: it opens a
# 1500-image chain from the headers, but builds explicit backing nodes in time cubic in
# their number (200: 5 s here, 300: 20 s), its JSON parser refuses nesting beyond 1024
# levels, and one -blockdev argument may not exceed Linux's 128 KiB (about 290 images).
MAX_EXPLICIT_BACKING_IMAGES = 200
# The qcow2 option discard-no-unref is QEMU 8.1's; QEMU 7.2 refuses it ("Parameter
# 'discard-no-unref' is unexpected").
DISCARD_NO_UNREF_SINCE = (8, 1)


class DriveGraphError(InvalidInputError):
    """A drive cannot be turned into QEMU nodes (bad volume, missing image, ...); names the drive."""


@dataclass(frozen=True)
class Disk:
    """A drive with what its ``file`` resolves to: everything the nodes are built from.

    ``volume`` is None for an empty drive (``none``); ``format`` is the format node's
    driver; ``read_only`` is qemu-server's read-only rule (ro, cdrom, templates).
    """

    drive: Drive
    volume: Volume | None
    format: str | None
    read_only: bool

    @property
    def key(self) -> str:
        return self.drive.key

    @property
    def path(self) -> str | None:
        return self.volume.path if self.volume else None

    @property
    def storage(self) -> Storage | None:
        return self.volume.storage if self.volume else None

    @property
    def existing_image(self) -> Path | None:
        """The volume's path on this host, if an image is there: a file, or a block device
        (LVM, a zvol); None for protocols and images not made yet."""
        if self.path is None:
            return None
        path = Path(self.path)
        return path if path.is_file() or path.is_block_device() else None


@dataclass(frozen=True)
class DriveGraph:
    """The throttle group object and the node tree of a drive (``top`` None when empty)."""

    disk: Disk
    throttle_group: Node
    top: Node | None
    warnings: tuple[str, ...] = ()

    @property
    def format_node(self) -> Node | None:
        return self.top["file"] if self.top else None


# --- the graph ------------------------------------------------------------------------


def resolve_disk(drive: Drive, storage: StorageConfig, *, template: bool = False,
                 read_only: bool = False) -> Disk:
    """Resolve the drive's volume and format as qemu-server does. ``read_only`` forces the
    nodes read-only (qemu-server's extra ``read-only`` option)."""
    read_only = read_only or is_read_only(drive, template=template)
    if drive.file == "none":
        return Disk(drive, None, None, read_only)
    if drive.file == "cdrom":
        return Disk(drive, Volume("cdrom", HOST_CDROM, None), _format(drive, None), read_only)
    try:
        volume = resolve(storage, drive.file)
    except InvalidInputError as error:
        raise DriveGraphError(f"{drive.key}: {error}") from None
    if volume.content == "iso" and drive.get("media") is None:
        raise DriveGraphError(f"{drive.key}: explicit media parameter is required for iso images")
    return Disk(drive, volume, _format(drive, volume), read_only)


def _format(drive: Drive, volume: Volume | None) -> str:
    """The storage's format for a volume (a different ``format=`` is an error); else
    ``format=``, else raw: QEMU never probes (qemu-server's generate_format_blockdev)."""
    explicit = drive.get("format")
    if volume is not None and volume.format is not None:
        if volume.format not in IMAGE_FORMATS:
            raise DriveGraphError(f"{drive.key}: volume '{volume.volid}' has format "
                                  f"'{volume.format}' (a container volume), not a VM disk image")
        if explicit is not None and explicit != volume.format:
            raise DriveGraphError(f"{drive.key}: volume '{volume.volid}' - 'format={explicit}' option "
                                  f"different from storage format '{volume.format}'")
        return volume.format
    return str(explicit or "raw")


def drive_graph(drive: Drive, storage: StorageConfig, *, tools: Tools, template: bool = False,
                read_only: bool = False,
                qemu_version: Callable[[], QemuVersion] | None = None) -> DriveGraph:
    """The whole graph of a drive: throttle group object and node tree, and the warnings.

    ``qemu_version`` gives the version of the QEMU that will open the nodes; it is asked
    only for a volume chain (``discard-no-unref`` needs QEMU 8.1). None: the newest QEMU.
    """
    disk = resolve_disk(drive, storage, template=template, read_only=read_only)
    group = throttle_group(drive)
    if disk.volume is None:
        return DriveGraph(disk, group, None, tuple(ignored_cache_options(disk)))
    fmt, warnings = _format_node(disk, tools, qemu_version=qemu_version)
    top = {"driver": "throttle", "node-name": top_node_name(drive.key),
           "throttle-group": throttle_group_id(drive.key), "file": fmt,
           **_common_options(disk, read_only=disk.read_only)}
    return DriveGraph(disk, group, top, (*ignored_cache_options(disk), *warnings))


def format_node(disk: Disk, *, tools: Tools, explicit_backing: bool = False,
                qemu_version: QemuVersion | None = None) -> Node:
    """The format node's complete options, children nested (file node, explicit backing
    nodes): the node ``-blockdev`` opens. For ``blockdev-reopen`` send
    :func:`reopen_options` of it (and of each explicit backing node below it).

    ``explicit_backing`` builds the backing nodes also when the drive does not size its
    cache from the image, with QEMU's default cache (what opening the chain from the
    header gives): for reopening a running chain whose backing nodes are explicit.

    Reads the image's chain (every format but raw, which has none) to refuse external
    data files in any image of it; a missing image is left for QEMU to report, unless
    the drive sizes its cache from it or ``explicit_backing`` asks for the chain; a volume
    chain is always read. ``qemu_version``: the QEMU that opens the nodes (None: the newest).
    """
    version = None if qemu_version is None else (lambda: qemu_version)
    return _format_node(disk, tools, explicit_backing=explicit_backing, qemu_version=version)[0]


def _format_node(disk: Disk, tools: Tools, *, explicit_backing: bool = False,
                 qemu_version: Callable[[], QemuVersion] | None = None) -> tuple[Node, list[str]]:
    if disk.volume is None or disk.format is None:
        raise DriveGraphError(f"{disk.key}: an empty drive (none) has no nodes")
    if is_volume_chain(disk):
        return _volume_chain_node(disk, tools, qemu_version)
    auto = cache.uses_auto_size(disk.drive)
    sized = disk.format == "qcow2" and (auto or explicit_backing)
    chain = _checked_chain(disk, tools, required=sized)
    if not sized or chain is None:
        options = (cache.drive_cache_options(disk.drive).as_qemu() if disk.format == "qcow2"
                   else {})
        return _image_node(disk, disk.volume.path, disk.format, depth=0, options=options), []
    if len(chain) - 1 > MAX_EXPLICIT_BACKING_IMAGES:
        raise DriveGraphError(
            f"{disk.key}: {chain[0].filename}: its backing chain of {len(chain) - 1} images is "
            f"too deep for a QEMU node per image (at most {MAX_EXPLICIT_BACKING_IMAGES}), "
            "which sizing each image's cache needs")
    top_options, warnings = cache.resolved_cache_options(disk.drive, chain[0], _size(disk.drive))
    backing: Node | None = None
    for depth in range(len(chain) - 1, 0, -1):
        image = chain[depth]
        options = ({"cache-size": cache.auto_size(image).cache_size} if auto and image.is_qcow2
                   else {})
        backing = _image_node(disk, image.filename, _format_driver(disk, image), depth=depth,
                              options=options, backing=backing)
    return _image_node(disk, disk.volume.path, "qcow2", depth=0, options=top_options.as_qemu(),
                       backing=backing), warnings


def _size(drive: Drive) -> int | None:
    size = drive.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _checked_chain(disk: Disk, tools: Tools, *, required: bool) -> list[ImageInfo] | None:
    """The disk's image and its backing chain, none using an external data file; None for
    raw (no chain) and, unless ``required``, for an image that does not exist yet."""
    assert disk.volume is not None and disk.format is not None
    path = disk.volume.path
    if disk.format == "raw" or not (required or os.path.lexists(path)):
        return None
    try:
        chain = read_chain(path, format=disk.format, tools=tools)
    except ImageError as error:
        reason = "cannot size the qcow2 cache from the image: " if required else ""
        raise DriveGraphError(f"{disk.key}: {reason}{error}") from None
    for image in chain:
        try:
            refuse_external_data_file(image)
        except DataFileError as error:
            raise DriveGraphError(f"{disk.key}: {error}") from None
    return chain


def _format_driver(disk: Disk, image: ImageInfo) -> str:
    """The driver of an explicit node for an image QEMU opens as ``image.format`` (the
    backing format its overlay's header names, or the probed one). A protocol driver
    (``-F file``) reads the file as it is: a raw node over the file node reads the same
    bytes. Filters (``-F blkdebug``, ``preallocate``) have no node of this shape."""
    if image.format in _PROTOCOL_DRIVERS:
        return "raw"
    if image.format not in _IMAGE_FORMATS:
        raise DriveGraphError(f"{disk.key}: {image.filename}: its overlay's header names the "
                              f"backing format '{image.format}', not an image format: qdisk "
                              "cannot give it a node of its own")
    return image.format


def _image_node(disk: Disk, path: str, driver: str, *, depth: int, options: Mapping[str, int],
                backing: Node | None = None) -> Node:
    """One image: its format node over its file node. Depth 0 is the drive's own image."""
    read_only = disk.read_only or depth > 0
    volid = disk.volume.volid if disk.volume else ""
    cache = cache_mode(disk.drive, disk.storage).as_node_option()
    remote = disk.volume.remote if disk.volume is not None and depth == 0 else None
    file: Node = {**_protocol_node(disk, path, remote), "cache": cache,
                  "node-name": node_name("e", disk.key, volid, backing_depth=depth),
                  **_common_options(disk, read_only=read_only)}
    node: Node = {"driver": driver, "file": file, "cache": cache,
                  "node-name": node_name("f", disk.key, volid, backing_depth=depth),
                  **_common_options(disk, read_only=read_only), **options}
    if driver == "qcow2" and disk.storage is not None and disk.storage.volume_chain:
        # qemu-server: discarded clusters stay allocated, so the overlays of a volume
        # chain (on a thick LV, or a file) do not fragment as clusters are freed and reused.
        node["discard-no-unref"] = True
    if backing is not None:
        node["backing"] = backing
    return node


# --- qemu-server's volume chains (snapshot-as-volume-chain) -------------------------------


def is_volume_chain(disk: Disk) -> bool:
    """A qcow2 volume on a storage with ``snapshot-as-volume-chain``: its snapshots are
    qcow2 layers below it (qemu-server's 'mixed' snapshot method)."""
    return disk.format == "qcow2" and disk.storage is not None and disk.storage.volume_chain


def _volume_chain_node(disk: Disk, tools: Tools,
                       qemu_version: Callable[[], QemuVersion] | None) -> tuple[Node, list[str]]:
    """qemu-server's nodes of a volume chain (generate_backing_chain_blockdev): the volume
    and each older layer down to the oldest as explicit, nested backing nodes; qdisk's
    auto size per layer from that layer's own header."""
    assert disk.volume is not None
    layers = volume_chain_layers(disk, tools)
    warnings: list[str] = []
    version = qemu_version() if qemu_version is not None else None
    discard_no_unref = version is None or version[:2] >= DISCARD_NO_UNREF_SINCE
    if version is not None and not discard_no_unref:
        warnings.append(f"{disk.key}: discard-no-unref left out: QEMU "
                        f"{'.'.join(map(str, version))} does not have it (8.1 and newer do); "
                        "clusters the guest discards in the volume chain's images are freed "
                        "and reused, which fragments them")
    backing: Node | None = None
    for depth in range(len(layers) - 1, -1, -1):
        snapshot, image = layers[depth]
        if image is None:
            options, layer_warnings = cache.resolved_cache_options(disk.drive, None, _size(disk.drive))
        else:
            options, layer_warnings = _layer_cache_options(disk, image, top=depth == 0)
        warnings += layer_warnings
        path = disk.volume.path if image is None else image.filename
        driver = "qcow2" if image is None else image.format
        # Images that are no layer of this volume (a linked clone's base) are shared:
        # read-only, as QEMU would open them itself.
        foreign = depth > 0 and snapshot is None
        node = _image_node(disk, path, driver, depth=depth if foreign else 0,
                           options=options.as_qemu() if driver == "qcow2" else {},
                           backing=backing)
        if not discard_no_unref:
            node.pop("discard-no-unref", None)
        if depth > 0 and not foreign:
            volid = disk.volume.volid
            node["node-name"] = node_name("f", disk.key, volid, snapshot=snapshot)
            node["file"]["node-name"] = node_name("e", disk.key, volid, snapshot=snapshot)
        backing = node
    assert backing is not None
    return backing, warnings


def volume_chain_layers(disk: Disk, tools: Tools) -> list[tuple[str | None, ImageInfo | None]]:
    """The layers of a volume chain, top first: ``(snapshot, image)``, the snapshot None for
    the volume itself (and for images below that are no snapshot of it). A volume whose
    image does not exist yet is one layer without facts (unless its cache is sized from
    it: then the image is needed)."""
    assert disk.volume is not None
    if not cache.uses_auto_size(disk.drive) and not os.path.lexists(disk.volume.path):
        return [(None, None)]
    chain = _checked_chain(disk, tools, required=True)
    assert chain is not None  # a volume chain is qcow2, and its image is required
    return [(None if depth == 0 else layer_snapshot(disk.volume, image.filename), image)
            for depth, image in enumerate(chain)]


def _layer_cache_options(disk: Disk, image: ImageInfo, *,
                         top: bool) -> tuple[cache.CacheOptions, list[str]]:
    """The drive's cache options for one layer, as QEMU will take them: explicit keys as
    they are (qemu-server), the auto size from the layer's own header (qdisk)."""
    if not image.is_qcow2:
        return cache.CacheOptions(), []
    options, warnings = cache.resolved_cache_options(disk.drive, image,
                                                     _size(disk.drive) if top else None)
    try:
        cache.effective_cache(image, options)
    except cache.QemuCacheError as error:
        raise DriveGraphError(f"{disk.key}: layer {image.filename} of the volume chain: "
                              f"{error.qemu_message}") from None
    return options, warnings


def _protocol_node(disk: Disk, path: str, remote: IscsiLun | RbdImage | None) -> Node:
    """The protocol part of the file node: QEMU's iscsi or rbd driver for a volume on the
    network, else a file, device or CD-ROM path (the only drivers that take ``aio``)."""
    if isinstance(remote, IscsiLun):
        return {"driver": "iscsi", "transport": "tcp", "portal": remote.portal,
                "target": remote.target, "lun": remote.lun}
    if isinstance(remote, RbdImage):
        node: Node = {"driver": "rbd", "pool": remote.pool, "image": remote.image}
        if remote.namespace is not None:
            node["namespace"] = remote.namespace
        if remote.conf is not None:
            node["conf"] = remote.conf
        if remote.monitors:
            node["server"] = [{"host": host, "port": port or CEPH_MON_PORT} for host, port in remote.monitors]
            node["auth-client-required"] = [remote.auth]
        if remote.user is not None:
            node["user"] = remote.user
        return node
    return {"driver": _file_driver(path), "filename": path, "aio": aio_mode(disk.drive, disk.storage)}


def _file_driver(path: str) -> str:
    """qemu-server's choice (after QEMU's hdev_probe_device): /dev/cd* and /dev/sr* are CD-ROMs."""
    if path.startswith(("/dev/cd", "/dev/sr")):
        return "host_cdrom"
    return "host_device" if path.startswith("/dev/") else "file"


def _common_options(disk: Disk, *, read_only: bool) -> Node:
    """The options every node of the chain gets (qemu-server's throttle->fmt->file)."""
    options: Node = {"read-only": read_only}
    if not disk.drive.is_cdrom:
        options["discard"] = discard_mode(disk.drive)
        options["detect-zeroes"] = detect_zeroes(disk.drive)
    return options


def ignored_cache_options(disk: Disk) -> list[str]:
    """Warnings for qcow2 keys on a disk whose format is not qcow2: QEMU would refuse them."""
    if "format" in disk.drive.values:
        source = ""
    elif disk.volume is not None and disk.volume.format is not None:
        source = " (the storage's)"
    else:
        source = " (no format= given)"
    return ignored_qcow2_keys(disk.key, disk.drive.values, disk.format, source)

"""The images measured and the variants: each one a drive string in qdisk's own language.

A variant is served from the node graph that qdisk's command generation makes of its
drive string, so the benchmark measures exactly what a VM started by qdisk would get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk.errors import InvalidInputError
from qdisk.image import create_image, read_image
from qdisk.settings import Settings

MIB = 1 << 20

RAW = "raw"
QCOW2_DEFAULT = "qcow2-default"
QCOW2_AUTO = "qcow2-auto"
CHAIN_TOP_ONLY = "chain-top-only"
CHAIN_AUTO = "chain-auto"
VARIANT_NAMES = (RAW, QCOW2_DEFAULT, QCOW2_AUTO, CHAIN_TOP_ONLY, CHAIN_AUTO)

# (name, numerator, denominator) of each ratio reported.
RATIOS = ((QCOW2_AUTO, RAW), (QCOW2_AUTO, QCOW2_DEFAULT), (CHAIN_AUTO, CHAIN_TOP_ONLY))

AIO_MODES = ("native", "io_uring")


@dataclass(frozen=True)
class BenchImages:
    """The images to measure; a role is None when there is no image for it."""

    raw: Path | None = None
    qcow2: Path | None = None  # a qcow2 image without backing file
    overlay: Path | None = None  # a qcow2 image with a backing chain


@dataclass(frozen=True)
class Variant:
    """One configuration to measure: a name and the drive string that configures it."""

    name: str
    drive: str


@dataclass(frozen=True)
class NodeGraph:
    """What qemu-storage-daemon is given for a drive: ``--object``s, ``--blockdev``s, the node to export."""

    objects: list[dict[str, Any]]
    blockdevs: list[dict[str, Any]]
    top_node: str


def make_scratch_images(directory: Path, size: int, settings: Settings) -> BenchImages:
    """A raw file, a metadata-preallocated qcow2 (every L2 table exists) and a thin overlay on it."""
    raw = directory / "raw.img"
    create_image(settings.tools, raw, "raw", size)
    qcow2 = directory / "base.qcow2"
    # Without preallocated metadata there are no L2 tables to look up: nothing to measure.
    create_image(settings.tools, qcow2, "qcow2", size, options={"preallocation": "metadata"})
    overlay = directory / "overlay.qcow2"
    create_image(settings.tools, overlay, "qcow2", size,
                 options={"backing_file": str(qcow2), "backing_fmt": "qcow2"})
    return BenchImages(raw=raw, qcow2=qcow2, overlay=overlay)


def classify_image(path: Path, settings: Settings) -> BenchImages:
    """A user's image in the one role it can play."""
    info = read_image(path, tools=settings.tools)
    if info.format == "raw":
        return BenchImages(raw=path)
    if not info.is_qcow2:
        raise InvalidInputError(f"{path}: format {info.format} cannot be measured (raw or qcow2 only)")
    if info.backing_path is not None:
        return BenchImages(overlay=path)
    return BenchImages(qcow2=path)


def variants(images: BenchImages, settings: Settings, aio: str) -> list[Variant]:
    """The variants that apply to the images, in the order of :data:`VARIANT_NAMES`."""
    # ro=1: every node is opened read-only, so the images are never written.
    common = f"cache=none,aio={aio},ro=1"
    found: list[Variant] = []
    if images.raw:
        found.append(Variant(RAW, f"{images.raw},format=raw,{common}"))
    if images.qcow2:
        found.append(Variant(QCOW2_DEFAULT, f"{images.qcow2},format=qcow2,{common}"))
        found.append(Variant(QCOW2_AUTO, f"{images.qcow2},format=qcow2,{common},"
                                         "qcow2-cache-size-based-on-disk=1"))
    if images.overlay:
        # The seed's behaviour: an explicit size, which reaches the top image only.
        top_mib = math.ceil(auto_cache_size(images.overlay, settings) / MIB)
        found.append(Variant(CHAIN_TOP_ONLY, f"{images.overlay},format=qcow2,{common},"
                                             f"qcow2-cache-size={top_mib}"))
        found.append(Variant(CHAIN_AUTO, f"{images.overlay},format=qcow2,{common},"
                                         "qcow2-cache-size-based-on-disk=1"))
    return found


# --- provisional seam: replaced by qdisk.image / qdisk.cache / qdisk.qemu once they land ---

def image_facts(path: Path, settings: Settings) -> dict[str, Any]:
    info = read_image(path, tools=settings.tools)
    return {"virtual-size": info.virtual_size, "cluster-size": info.cluster_size,
            "format-specific": {"data": {"refcount-bits": info.refcount_bits}}}


def _l2_needed(virtual_size: int, cluster: int) -> int:
    return max(2 * cluster, math.ceil(math.ceil(virtual_size / cluster) * 8 / cluster) * cluster)


@dataclass(frozen=True)
class L2Geometry:
    """The L2 facts the sweep needs: what covers the whole image, and what QEMU uses by default."""

    cluster_size: int
    l2_needed: int
    default_l2: int
    default_entry: int


def l2_geometry(path: Path, settings: Settings) -> L2Geometry:
    facts = image_facts(path, settings)
    size, cluster = int(facts["virtual-size"]), int(facts["cluster-size"])
    needed = _l2_needed(size, cluster)
    default = min(needed, 32 * MIB)
    return L2Geometry(cluster, needed, default, cluster if default >= needed else min(cluster, 4096))


def auto_cache_size(path: Path, settings: Settings) -> int:
    facts = image_facts(path, settings)
    size, cluster = int(facts["virtual-size"]), int(facts["cluster-size"])
    refcount_bits = int(facts["format-specific"]["data"]["refcount-bits"])
    refcount = max(4 * cluster, math.ceil(size * refcount_bits / (8 * cluster) / cluster) * cluster)
    return _l2_needed(size, cluster) + refcount


def node_graph(drive: str, settings: Settings) -> NodeGraph:
    path, *options = drive.split(",")
    opts = dict(option.split("=", 1) for option in options)
    fmt: dict[str, Any] = {
        "driver": opts["format"], "node-name": "fmt", "read-only": True,
        "cache": {"direct": True, "no-flush": False},
        "file": {"driver": "file", "node-name": "file", "filename": path, "aio": opts["aio"],
                 "read-only": True, "cache": {"direct": True, "no-flush": False}},
    }
    if opts.get("qcow2-cache-size-based-on-disk"):
        fmt["cache-size"] = auto_cache_size(Path(path), settings)
    if "qcow2-cache-size" in opts:
        fmt["cache-size"] = int(opts["qcow2-cache-size"]) * MIB
    if "qcow2-l2-cache-size" in opts:
        fmt["l2-cache-size"] = int(opts["qcow2-l2-cache-size"]) * MIB
    if "qcow2-l2-cache-entry-size" in opts:
        fmt["l2-cache-entry-size"] = int(opts["qcow2-l2-cache-entry-size"])
    throttle = {"driver": "throttle", "node-name": "drive-scsi0", "throttle-group": "throttle-drive-scsi0",
                "file": fmt, "read-only": True}
    return NodeGraph([{"qom-type": "throttle-group", "id": "throttle-drive-scsi0", "limits": {}}],
                     [throttle], "drive-scsi0")

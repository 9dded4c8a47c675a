"""The images measured and the variants: each one a drive string in qdisk's own language.

A variant is served from the ``-blockdev`` arguments that qdisk's command generation
makes of its drive string, so the benchmark measures what a VM started by qdisk gets
(every node forced read-only; a load that writes gets scratch copies instead).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from qdisk import cache
from qdisk.config.drive import parse_drive
from qdisk.errors import InvalidInputError
from qdisk.image.info import create_image, read_image
from qdisk.qemu.blockdev import BlockdevArguments, drive_blockdev
from qdisk.qemu.nodes import Node
from qdisk.settings import Settings
from qdisk.units import MIB

# fio reads blocks of 4 KiB: a smaller image (a stray text file probes as raw) cannot be read.
MIN_IMAGE_BYTES = 4096
# Every variant is configured as this drive of a VM (absolute paths: no storage needed).
BENCH_DRIVE_KEY = "scsi0"

RAW = "raw"
QCOW2_DEFAULT = "qcow2-default"
QCOW2_AUTO = "qcow2-auto"
CHAIN_TOP_ONLY = "chain-top-only"
CHAIN_AUTO = "chain-auto"
VARIANT_NAMES = (RAW, QCOW2_DEFAULT, QCOW2_AUTO, CHAIN_TOP_ONLY, CHAIN_AUTO)
# The variants of one image without backing file: what the workloads compare.
SINGLE_IMAGE_NAMES = (RAW, QCOW2_DEFAULT, QCOW2_AUTO)
AUTO_KEY = "qcow2-cache-size-based-on-disk=1"

# (numerator, denominator) of each ratio reported.
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
    """One configuration to measure: a name, its image, and the drive string that
    configures it (built, and its path checked, when the variant is made)."""

    name: str
    image: Path
    format: str
    aio: str
    cache_keys: tuple[str, ...] = ()
    drive: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "drive", drive_string(self.image, self.format, self.aio, *self.cache_keys))


def create_scratch_image(path: Path, fmt: str, size: int, settings: Settings) -> None:
    """A sparse raw file, or a qcow2 whose metadata is preallocated (every L2 table exists)."""
    # Without preallocated metadata there are no L2 tables to look up: nothing to measure.
    options = {"preallocation": "metadata"} if fmt == "qcow2" else None
    create_image(settings.tools, path, fmt, size, options=options)


def make_scratch_images(directory: Path, size: int, settings: Settings) -> BenchImages:
    """A raw file, a metadata-preallocated qcow2 and a thin overlay on it."""
    raw = directory / "raw.img"
    create_scratch_image(raw, "raw", size, settings)
    qcow2 = directory / "base.qcow2"
    create_scratch_image(qcow2, "qcow2", size, settings)
    overlay = directory / "overlay.qcow2"
    create_image(settings.tools, overlay, "qcow2", size,
                 options={"backing_file": str(qcow2), "backing_fmt": "qcow2"})
    return BenchImages(raw=raw, qcow2=qcow2, overlay=overlay)


def classify_image(path: Path, settings: Settings) -> BenchImages:
    """A user's image in the one role it can play (absolute: drive strings need it)."""
    path = path.resolve()
    info = read_image(path, tools=settings.tools)
    if info.virtual_size < MIN_IMAGE_BYTES:
        raise InvalidInputError(f"{path}: {info.virtual_size} bytes as {info.format}: not a disk image "
                                f"that 4 KiB reads can measure")
    if info.format == "raw":
        return BenchImages(raw=path)
    if not info.is_qcow2:
        raise InvalidInputError(f"{path}: format {info.format} cannot be measured (raw or qcow2 only)")
    if info.backing_path is not None:
        return BenchImages(overlay=path)
    return BenchImages(qcow2=path)


def drive_string(image: Path, fmt: str, aio: str, *cache_keys: str) -> str:
    """``file=<image>,format=...,cache=none,aio=...[,qcow2-...]``: direct I/O, so the host's
    page cache hides no miss."""
    # A property string has no escaping: a comma would split the path. The explicit
    # file= key keeps a path with "=" from being read as a key.
    if "," in str(image):
        raise InvalidInputError(f"{image}: a path with a comma cannot be named in a drive string")
    return ",".join([f"file={image}", f"format={fmt}", "cache=none", f"aio={aio}", *cache_keys])


def variants_for(images: BenchImages, settings: Settings, aio: str) -> list[Variant]:
    """The variants that apply to the images, in the order of :data:`VARIANT_NAMES`."""
    found: list[Variant] = []
    if images.raw:
        found.append(Variant(RAW, images.raw, "raw", aio))
    if images.qcow2:
        found += qcow2_variants(images.qcow2, aio)
    if images.overlay:
        # The Proxmox VE patch's behaviour: an explicit size, which reaches the top image only.
        top_mib = math.ceil(auto_cache_size(images.overlay, settings) / MIB)
        found.append(Variant(CHAIN_TOP_ONLY, images.overlay, "qcow2", aio, (f"qcow2-cache-size={top_mib}",)))
        found.append(Variant(CHAIN_AUTO, images.overlay, "qcow2", aio, (AUTO_KEY,)))
    return found


def qcow2_variants(image: Path, aio: str) -> tuple[Variant, Variant]:
    """``qcow2-default`` and ``qcow2-auto`` of a qcow2 image without backing file."""
    return Variant(QCOW2_DEFAULT, image, "qcow2", aio), Variant(QCOW2_AUTO, image, "qcow2", aio, (AUTO_KEY,))


def single_image_variants(images: BenchImages, settings: Settings, aio: str) -> list[Variant]:
    """``raw``, ``qcow2-default`` and ``qcow2-auto``, as far as the images have them."""
    found = [variant for variant in variants_for(images, settings, aio) if variant.name in SINGLE_IMAGE_NAMES]
    if not found:
        raise InvalidInputError(f"{images.overlay}: the workloads need a raw image or a qcow2 image "
                                "without backing file")
    return found


def require_qcow2(images: BenchImages, what: str) -> Path:
    """The qcow2 image without backing file that ``what`` measures."""
    if images.qcow2 is None:
        image = images.raw or images.overlay
        raise InvalidInputError(f"{image}: {what} needs a qcow2 image without backing file")
    return images.qcow2


@contextmanager
def written_copies(variants: Sequence[Variant], directory: Path, settings: Settings) -> Iterator[list[Variant]]:
    """Each variant on its own new scratch image of its format and size, for a load that
    writes; removed afterwards. The measured images stay unwritten, and no variant finds
    blocks that another one allocated."""
    copies = []
    try:
        for variant in variants:
            path = directory / f"written-{variant.name}.{variant.format}"
            size = read_image(variant.image, format=variant.format, tools=settings.tools).virtual_size
            create_scratch_image(path, variant.format, size, settings)
            copies.append(replace(variant, image=path))
        yield copies
    finally:
        for copy in copies:
            copy.image.unlink(missing_ok=True)


@dataclass(frozen=True)
class L2Geometry:
    """The L2 facts the sweep needs: what covers the whole image, what QEMU uses by default,
    and the L2 part of qdisk's automatic size."""

    cluster_size: int
    l2_needed: int
    default_l2: int
    default_entry: int
    auto_l2: int


def l2_geometry(path: Path, settings: Settings) -> L2Geometry:
    info = read_image(path, format="qcow2", tools=settings.tools)
    default = cache.default_cache(info)
    # The auto size is one cache-size: QEMU's split of it is what the plot marks.
    auto = cache.effective_cache(info, cache.CacheOptions(cache_size=cache.auto_size(info).cache_size))
    return L2Geometry(default.cluster_size, cache.needed_l2_cache_size(info),
                      default.l2_cache_size, default.l2_cache_entry_size, auto.l2_cache_size)


def auto_cache_size(path: Path, settings: Settings) -> int:
    """qdisk's automatic ``cache-size`` for the image (the Proxmox VE patch's formula)."""
    return cache.auto_size(read_image(path, format="qcow2", tools=settings.tools)).cache_size


def blockdev_arguments(drive: str, settings: Settings, *, writable: bool = False) -> BlockdevArguments:
    """The ``--object``/``--blockdev`` arguments qdisk generates for ``scsi0: <drive>``,
    read-only unless ``writable``."""
    return drive_blockdev(parse_drive(BENCH_DRIVE_KEY, drive).drive, settings, read_only=not writable)


def format_node(drive: str, settings: Settings) -> Node:
    """The format node of the drive's graph (below the throttle node), children nested:
    what a live change reopens."""
    node: Node = blockdev_arguments(drive, settings).blockdevs[0]["file"]
    return node

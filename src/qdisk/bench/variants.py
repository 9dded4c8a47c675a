"""The images measured and the variants: each one a drive string in qdisk's own language.

A variant is served from the ``-blockdev`` arguments that qdisk's command generation
makes of its drive string, so the benchmark measures what a VM started by qdisk gets
(every node forced read-only: the images are never written).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from qdisk import cache
from qdisk.drive import parse_drive
from qdisk.errors import InvalidInputError
from qdisk.image import create_image, read_image
from qdisk.qemu.blockdev import BlockdevArguments, drive_blockdev
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
    """One configuration to measure: a name and the drive string that configures it."""

    name: str
    drive: str


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


def variants(images: BenchImages, settings: Settings, aio: str) -> list[Variant]:
    """The variants that apply to the images, in the order of :data:`VARIANT_NAMES`."""
    found: list[Variant] = []
    if images.raw:
        found.append(Variant(RAW, drive_string(images.raw, "raw", aio)))
    if images.qcow2:
        found.append(Variant(QCOW2_DEFAULT, drive_string(images.qcow2, "qcow2", aio)))
        found.append(Variant(QCOW2_AUTO, drive_string(images.qcow2, "qcow2", aio,
                                                      "qcow2-cache-size-based-on-disk=1")))
    if images.overlay:
        # The seed's behaviour: an explicit size, which reaches the top image only.
        top_mib = math.ceil(auto_cache_size(images.overlay, settings) / MIB)
        found.append(Variant(CHAIN_TOP_ONLY, drive_string(images.overlay, "qcow2", aio,
                                                          f"qcow2-cache-size={top_mib}")))
        found.append(Variant(CHAIN_AUTO, drive_string(images.overlay, "qcow2", aio,
                                                      "qcow2-cache-size-based-on-disk=1")))
    return found


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
    """qdisk's automatic ``cache-size`` for the image (the seed's formula)."""
    return cache.auto_size(read_image(path, format="qcow2", tools=settings.tools)).cache_size


def blockdev_arguments(drive: str, settings: Settings) -> BlockdevArguments:
    """The ``--object``/``--blockdev`` arguments qdisk generates for ``scsi0: <drive>``, read-only."""
    return drive_blockdev(parse_drive(BENCH_DRIVE_KEY, drive).drive, settings, read_only=True)

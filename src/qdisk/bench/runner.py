"""Measuring variants in interleaved rounds, and the L2 cache sweep."""

from __future__ import annotations

import math
import os
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk.bench.daemon import EXPORT_NAME, StorageDaemon
from qdisk.bench.fio import RANDREAD, FioResult, Workload, fio_version, run_fio
from qdisk.bench.stats import Summary, ratios, summarize
from qdisk.bench.variants import (
    RATIOS,
    RAW,
    BenchImages,
    Variant,
    blockdev_arguments,
    classify_image,
    l2_geometry,
    make_scratch_images,
    variants_for,
)
from qdisk.errors import InvalidInputError
from qdisk.settings import Settings
from qdisk.system import tools
from qdisk.units import MIB

DEFAULT_SIZE = 1 << 40
DEFAULT_RUNTIME = 8
DEFAULT_ROUNDS = 3

# L2 cache sizes of the sweep, as shares of what covers the whole image.
SWEEP_FRACTIONS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)
SWEEP_ENTRY_SIZES = (4096, 65536)


@dataclass(frozen=True)
class Progress:
    """Where a run is: ``done`` of ``total`` measurements finished; ``message`` says what happens."""

    done: int
    total: int
    message: str


ProgressCallback = Callable[[Progress], None]


def ignore_progress(progress: Progress) -> None:
    pass


@dataclass(frozen=True)
class Measurement:
    """One variant served once and read by fio once."""

    fio: FioResult
    rss_bytes: int


def measure(variant: Variant, settings: Settings, runtime: int, workdir: Path,
            workload: Workload = RANDREAD) -> Measurement:
    """Serve the variant's node graph with qemu-storage-daemon and load it with fio (a
    load that writes is served writable)."""
    arguments = blockdev_arguments(variant.drive, settings, writable=workload.writes)
    with StorageDaemon(settings.tools.qemu_storage_daemon, arguments.objects, arguments.blockdevs,
                       arguments.top_node_name, workdir, writable=workload.writes) as daemon:
        result = run_fio(settings.tools.fio, daemon.socket, EXPORT_NAME, runtime, workdir / "fio.json",
                         workload)
        return Measurement(result, daemon.rss_bytes())


def run_rounds(variants: Sequence[Variant], settings: Settings, *, runtime: int, rounds: int,
               workdir: Path, progress: ProgressCallback, workload: Workload = RANDREAD,
               title: str = "") -> dict[str, Summary]:
    """Measure every variant once per round (A B C A B C ...: drift hits all alike); medians.
    ``title`` starts the progress messages."""
    measured: dict[str, list[Measurement]] = {variant.name: [] for variant in variants}
    total = rounds * len(variants)
    done = 0
    for round_number in range(1, rounds + 1):
        for variant in variants:
            step = f"{title}round {round_number}/{rounds}: {variant.name}"
            progress(Progress(done, total, step))
            measurement = measure(variant, settings, runtime, workdir, workload)
            measured[variant.name].append(measurement)
            done += 1
            progress(Progress(done, total, f"{step}: {measurement.fio.iops:,.0f} IOPS"))
    return {name: summarize([m.fio for m in runs], [m.rss_bytes for m in runs])
            for name, runs in measured.items()}


def machine_info(settings: Settings) -> dict[str, Any]:
    """What the numbers depend on besides qdisk: the machine, its kernel, fio."""
    return {
        "cores": os.cpu_count(),
        "memory-bytes": _meminfo_total(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "fio": fio_version(settings.tools.fio),
    }


def _meminfo_total() -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def qemu_version_text(settings: Settings) -> str:
    return ".".join(map(str, tools.qemu_version(settings.tools.qemu_storage_daemon)))


def summary_json(summary: Summary) -> dict[str, Any]:
    return {"iops": round(summary.iops), "lat-p50-us": round(summary.lat_p50_us, 1),
            "lat-p99-us": round(summary.lat_p99_us, 1), "rss-bytes": summary.rss_bytes}


@dataclass(frozen=True)
class BenchReport:
    """Per variant the medians; the ratios of the issue; where it ran."""

    variants: dict[str, Summary]
    ratios: dict[str, float]
    machine: dict[str, Any]
    qemu: str

    def to_json(self) -> dict[str, Any]:
        return {
            "variants": {name: summary_json(s) for name, s in self.variants.items()},
            "ratios": {name: round(value, 3) for name, value in self.ratios.items()},
            "machine": self.machine,
            "qemu": self.qemu,
        }


@contextmanager
def session(settings: Settings, image: Path | None, size: int, runtime: int, rounds: int,
            tmp_parent: Path | None, progress: ProgressCallback) -> Iterator[tuple[Path, BenchImages]]:
    """A work directory and the images to measure (``image``'s role, or scratch images in it).

    Everything a run creates (images, sockets, reports) lives in the work directory and
    goes with it when the block ends, also on errors and Ctrl-C.
    """
    if runtime < 1 or rounds < 1:
        raise InvalidInputError("runtime and rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="qdisk-bench-", dir=tmp_parent) as name:
        workdir = Path(name)
        if image is not None:
            yield workdir, classify_image(image, settings)
            return
        progress(Progress(0, 1, f"creating scratch images of {size:,} bytes"))
        yield workdir, make_scratch_images(workdir, size, settings)


def run_bench(settings: Settings, *, image: Path | None = None, size: int = DEFAULT_SIZE,
              runtime: int = DEFAULT_RUNTIME, rounds: int = DEFAULT_ROUNDS, aio: str = "native",
              progress: ProgressCallback = ignore_progress, tmp_parent: Path | None = None) -> BenchReport:
    """Measure the variants that apply to ``image`` (None: scratch images of ``size`` bytes)."""
    with session(settings, image, size, runtime, rounds, tmp_parent, progress) as (workdir, images):
        summaries = run_rounds(variants_for(images, settings, aio), settings, runtime=runtime,
                               rounds=rounds, workdir=workdir, progress=progress)
    return BenchReport(
        variants=summaries,
        ratios=ratios({name: s.iops for name, s in summaries.items()}, RATIOS),
        machine=machine_info(settings),
        qemu=qemu_version_text(settings),
    )


@dataclass(frozen=True)
class SweepPoint:
    """IOPS with one L2 cache size and entry size."""

    l2_cache_bytes: int
    entry_bytes: int
    coverage: float  # share of the virtual disk that the L2 cache maps
    summary: Summary


@dataclass(frozen=True)
class SweepReport:
    points: list[SweepPoint]
    l2_needed_bytes: int
    default_l2_bytes: int
    default_entry_bytes: int
    auto_l2_bytes: int
    raw: Summary | None  # the physical limit, when a raw image was measured beside
    machine: dict[str, Any]
    qemu: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": {
                "l2-needed-bytes": self.l2_needed_bytes,
                "default": {"l2-cache-size": self.default_l2_bytes,
                            "l2-cache-entry-size": self.default_entry_bytes},
                "auto": {"l2-cache-size": self.auto_l2_bytes},
                "points": [{"l2-cache-size": p.l2_cache_bytes, "l2-cache-entry-size": p.entry_bytes,
                            "coverage": round(p.coverage, 4), **summary_json(p.summary)}
                           for p in self.points],
                "raw": summary_json(self.raw) if self.raw else None,
            },
            "machine": self.machine,
            "qemu": self.qemu,
        }


def sweep_sizes(l2_needed: int) -> list[int]:
    """L2 cache sizes in MiB (the drive option's unit) for each sweep fraction, distinct, ascending."""
    full_mib = math.ceil(l2_needed / MIB)
    return sorted({min(full_mib, max(1, math.ceil(l2_needed * f / MIB))) for f in SWEEP_FRACTIONS})


def run_sweep(settings: Settings, *, image: Path | None = None, size: int = DEFAULT_SIZE,
              runtime: int = DEFAULT_RUNTIME, rounds: int = DEFAULT_ROUNDS, aio: str = "native",
              progress: ProgressCallback = ignore_progress, tmp_parent: Path | None = None) -> SweepReport:
    """IOPS of the qcow2 image against L2 cache size and entry size (raw beside, when there is one)."""
    with session(settings, image, size, runtime, rounds, tmp_parent, progress) as (workdir, images):
        if images.qcow2 is None:
            raise InvalidInputError(f"{image}: the sweep needs a qcow2 image without backing file")
        geometry = l2_geometry(images.qcow2, settings)
        points = [(mib, entry) for entry in SWEEP_ENTRY_SIZES if entry <= geometry.cluster_size
                  for mib in sweep_sizes(geometry.l2_needed)]
        sweep_variants = [
            Variant(f"l2 {mib} MiB, entry {entry}", images.qcow2, "qcow2", aio,
                      (f"qcow2-l2-cache-size={mib}", f"qcow2-l2-cache-entry-size={entry}"))
            for mib, entry in points]
        raw_variants = [variant for variant in variants_for(images, settings, aio) if variant.name == RAW]
        summaries = run_rounds(raw_variants + sweep_variants, settings, runtime=runtime, rounds=rounds,
                               workdir=workdir, progress=progress)
    return SweepReport(
        points=[SweepPoint(mib * MIB, entry, min(1.0, mib * MIB / geometry.l2_needed), summaries[variant.name])
                for (mib, entry), variant in zip(points, sweep_variants)],
        l2_needed_bytes=geometry.l2_needed,
        default_l2_bytes=geometry.default_l2,
        default_entry_bytes=geometry.default_entry,
        auto_l2_bytes=geometry.auto_l2,
        raw=summaries.get(RAW),
        machine=machine_info(settings),
        qemu=qemu_version_text(settings),
    )

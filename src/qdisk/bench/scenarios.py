"""The measurements beyond uniform random reads, in one run and one report: the live
change (:mod:`~qdisk.bench.livechange`), memory given back when idle
(:mod:`~qdisk.bench.idle`), and other workloads against ``raw``, ``qcow2-default`` and
``qcow2-auto``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk.bench.fio import WORKLOADS, Workload
from qdisk.bench.idle import IdleMemoryReport, run_idle_memory
from qdisk.bench.livechange import LiveChangeReport, run_live_change
from qdisk.bench.runner import (
    DEFAULT_ROUNDS,
    DEFAULT_RUNTIME,
    DEFAULT_SIZE,
    Progress,
    ProgressCallback,
    ignore_progress,
    machine_info,
    qemu_version_text,
    run_rounds,
    session,
    summary_json,
)
from qdisk.bench.stats import Summary, ratios
from qdisk.bench.variants import (
    QCOW2_AUTO,
    QCOW2_DEFAULT,
    RAW,
    Variant,
    require_qcow2,
    single_image_variants,
    written_copies,
)
from qdisk.errors import InvalidInputError
from qdisk.settings import Settings
from qdisk.units import MIB

WORKLOAD_RATIOS = ((QCOW2_AUTO, QCOW2_DEFAULT), (QCOW2_AUTO, RAW))


@dataclass(frozen=True)
class WorkloadResult:
    """One workload: per variant the medians, and the ratios."""

    workload: Workload
    variants: dict[str, Summary]
    ratios: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        block_bytes = self.workload.block_bytes
        return {
            "load": self.workload.summary,
            "fio": self.workload.argv(),
            "variants": {name: {**summary_json(s), "mib-per-s": round(s.iops * block_bytes / MIB, 1)}
                         for name, s in self.variants.items()},
            "ratios": {name: round(value, 3) for name, value in self.ratios.items()},
        }


@dataclass(frozen=True)
class ScenarioReport:
    """What was asked for (the other parts None or empty), and where it ran."""

    live_change: LiveChangeReport | None
    idle_memory: IdleMemoryReport | None
    workloads: dict[str, WorkloadResult]
    machine: dict[str, Any]
    qemu: str

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        if self.live_change is not None:
            report["live-change"] = self.live_change.to_json()
        if self.idle_memory is not None:
            report["idle-memory"] = self.idle_memory.to_json()
        if self.workloads:
            report["workloads"] = {name: result.to_json() for name, result in self.workloads.items()}
        return {**report, "machine": self.machine, "qemu": self.qemu}


def check_workloads(names: Sequence[str], image: Path | None) -> list[Workload]:
    """The workloads named; one that writes is refused on a user's image."""
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise InvalidInputError(f"unknown workload {unknown[0]!r} (known: {', '.join(WORKLOADS)})")
    chosen = [WORKLOADS[name] for name in dict.fromkeys(names)]
    writing = [workload.name for workload in chosen if workload.writes]
    if writing and image is not None:
        raise InvalidInputError(f"{image}: workload {writing[0]} writes: it runs on scratch images only "
                                "(leave out IMAGE)")
    return chosen


def run_scenarios(settings: Settings, *, live_change: bool = False, idle_memory: bool = False,
                  workloads: Sequence[str] = (), image: Path | None = None, size: int = DEFAULT_SIZE,
                  runtime: int = DEFAULT_RUNTIME, rounds: int = DEFAULT_ROUNDS, aio: str = "native",
                  progress: ProgressCallback = ignore_progress,
                  tmp_parent: Path | None = None) -> ScenarioReport:
    """Run what is asked for on ``image`` (None: scratch images of ``size`` bytes), in
    this order: the live change, the idle memory, each workload."""
    chosen = check_workloads(workloads, image)
    if not (live_change or idle_memory or chosen):
        raise InvalidInputError("nothing to measure: ask for --live-change, --idle-memory or --workload")
    live_report = idle_report = None
    results = {}
    with session(settings, image, size, runtime, rounds, tmp_parent, progress) as (workdir, images):
        options: dict[str, Any] = {"runtime": runtime, "rounds": rounds, "aio": aio, "workdir": workdir,
                                   "progress": progress}
        if live_change or idle_memory:
            qcow2 = require_qcow2(images, "the live change" if live_change else "the idle-memory measurement")
            if live_change:
                live_report = run_live_change(qcow2, settings, **options)
            if idle_memory:
                idle_report = run_idle_memory(qcow2, settings, **options)
        for workload in chosen:
            summaries = _run_workload(workload, single_image_variants(images, settings, aio), settings,
                                      runtime=runtime, rounds=rounds, workdir=workdir, progress=progress)
            results[workload.name] = WorkloadResult(
                workload, summaries, ratios({name: s.iops for name, s in summaries.items()}, WORKLOAD_RATIOS))
    return ScenarioReport(live_report, idle_report, results, machine_info(settings), qemu_version_text(settings))


def _run_workload(workload: Workload, variants: list[Variant], settings: Settings, *, runtime: int,
                  rounds: int, workdir: Path, progress: ProgressCallback) -> dict[str, Summary]:
    """Interleaved rounds of one workload. A load that writes runs on copies, one per
    variant, kept over the rounds: fio repeats its offsets in every run (``randrepeat``), so
    later rounds overwrite the blocks the first one allocated, and the copies are removed
    once (freeing scattered blocks is slow where the file system discards them)."""
    title = f"{workload.name}, "
    if not workload.writes:
        return run_rounds(variants, settings, runtime=runtime, rounds=rounds, workdir=workdir,
                          progress=progress, workload=workload, title=title)
    with written_copies(variants, workdir, settings) as copies:
        summaries = run_rounds(copies, settings, runtime=runtime, rounds=rounds, workdir=workdir,
                               progress=progress, workload=workload, title=title)
        progress(Progress(0, 1, f"{workload.name}: removing the written copies"))
    return summaries

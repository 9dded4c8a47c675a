"""``qdisk bench --idle-memory``: does an idle disk give its cache memory back
(``qcow2-cache-clean-interval``), and how fast are reads when they resume?

Each variant is ``qcow2-auto``, with a short clean interval or with QEMU's default
(600 s, longer than the idle time). The process serving it is a VM's
(:class:`~qdisk.bench.daemon.EmulatorDaemon`): qemu-storage-daemon never runs the clock
the clean timer needs. Per variant and round: the resident memory just after the start
(the baseline), after a second and then ``runtime`` seconds of random reads, and while
idle for two intervals and a second (entries unused for a whole interval are freed at the
next tick, so within two); the IOPS of the first second after the start (cold cache), of
the reads after it, and of the first second of reads after the idle time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qdisk.bench.daemon import EXPORT_NAME, EmulatorDaemon
from qdisk.bench.fio import run_fio
from qdisk.bench.runner import Progress, ProgressCallback
from qdisk.bench.stats import median_tree
from qdisk.bench.variants import Variant, blockdev_arguments, qcow2_variants
from qdisk.settings import Settings

CLEAN_INTERVAL = 2  # seconds
RESUME_SECONDS = 1
SAMPLE_SECONDS = 0.25
# "Given back": resident memory within this share above the baseline.
BASELINE_MARGIN = 0.10
CLEANED = "qcow2-auto-clean"


def idle_seconds(clean_interval: int) -> float:
    return 2 * clean_interval + 1


def released_after(samples: list[tuple[float, int]], baseline: int) -> float | None:
    """The first time (s after reads stopped) at which the resident memory was back within
    :data:`BASELINE_MARGIN` of ``baseline``; None if it never was."""
    limit = baseline * (1 + BASELINE_MARGIN)
    return next((round(elapsed, 2) for elapsed, rss in samples if rss <= limit), None)


def figures(baseline: int, reading: int, samples: list[tuple[float, int]],
            iops: dict[str, float]) -> dict[str, Any]:
    """One round of one variant, shaped as JSON. ``iops``: of the first second after the
    start (``cold``), of the reads after it (``reading``), of the first second after the
    idle time (``resumed``)."""
    return {
        "rss-bytes": {"baseline": baseline, "reading": reading, "idle": samples[-1][1]},
        "released-after-s": released_after(samples, baseline),
        "iops": {name: round(value) for name, value in iops.items()},
    }


def with_ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """:func:`figures` (of a round, or their medians) and the ratios between them."""
    rss, iops = figures["rss-bytes"], figures["iops"]
    return {**figures, "idle/baseline": round(rss["idle"] / rss["baseline"], 3),
            "resumed/reading": round(iops["resumed"] / iops["reading"], 3),
            "resumed/cold": round(iops["resumed"] / iops["cold"], 3)}


@dataclass(frozen=True)
class IdleMemoryReport:
    clean_interval: int
    rounds: dict[str, list[dict[str, Any]]]  # per variant, :func:`figures` of each round

    def to_json(self) -> dict[str, Any]:
        return {
            "server": "qemu-system -machine none",
            "clean-interval-s": self.clean_interval,
            "idle-s": idle_seconds(self.clean_interval),
            "resume-s": RESUME_SECONDS,
            "variants": {name: with_ratios(median_tree(rounds)) for name, rounds in self.rounds.items()},
            "rounds": self.rounds,
        }


def run_idle_memory(qcow2: Path, settings: Settings, *, runtime: int, rounds: int, aio: str,
                    workdir: Path, progress: ProgressCallback,
                    clean_interval: int = CLEAN_INTERVAL) -> IdleMemoryReport:
    """Interleaved rounds of qcow2-auto with and without a short clean interval."""
    _, auto = qcow2_variants(qcow2, aio)
    cleaned = replace(auto, name=CLEANED,
                      cache_keys=(*auto.cache_keys, f"qcow2-cache-clean-interval={clean_interval}"))
    measured: dict[str, list[dict[str, Any]]] = {cleaned.name: [], auto.name: []}
    total, done = rounds * len(measured), 0
    for number in range(1, rounds + 1):
        for variant in (cleaned, auto):
            step = f"idle memory, round {number}/{rounds}: {variant.name}"
            progress(Progress(done, total, step))
            result = _measure_idle(variant, settings, runtime, idle_seconds(clean_interval), workdir)
            measured[variant.name].append(result)
            done += 1
            ratios = with_ratios(result)
            progress(Progress(done, total, f"{step}: idle/baseline {ratios['idle/baseline']:.2f}, "
                                           f"resumed/cold {ratios['resumed/cold']:.2f}"))
    return IdleMemoryReport(clean_interval, measured)


def _measure_idle(variant: Variant, settings: Settings, runtime: int, idle: float,
                  workdir: Path) -> dict[str, Any]:
    arguments = blockdev_arguments(variant.drive, settings)
    fio, output = settings.tools.fio, workdir / "fio.json"
    with EmulatorDaemon(settings.tools.qemu_system, arguments.objects, arguments.blockdevs,
                        arguments.top_node_name, workdir) as daemon:
        baseline = daemon.rss_bytes()
        iops = {"cold": run_fio(fio, daemon.socket, EXPORT_NAME, RESUME_SECONDS, output).iops,
                "reading": run_fio(fio, daemon.socket, EXPORT_NAME, runtime, output).iops}
        reading_rss = daemon.rss_bytes()
        stopped = time.monotonic()
        samples = []
        while (elapsed := time.monotonic() - stopped) < idle:
            time.sleep(min(SAMPLE_SECONDS, idle - elapsed))
            samples.append((time.monotonic() - stopped, daemon.rss_bytes()))
        iops["resumed"] = run_fio(fio, daemon.socket, EXPORT_NAME, RESUME_SECONDS, output).iops
    return figures(baseline, reading_rss, samples, iops)

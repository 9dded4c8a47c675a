"""``qdisk bench --live-change``: what the guest's I/O sees while ``blockdev-reopen`` swaps
the qcow2 cache under it.

fio reads the ``qcow2-default`` variant through qemu-storage-daemon for three phases of
``runtime`` seconds each. After the first phase qdisk reopens the format node with the
options of ``qcow2-auto``, after the second with those of ``qcow2-default`` again. The
options are :func:`qdisk.qemu.nodes.reopen_options` of the variant's format node, as
:mod:`qdisk.live` sends them to a running VM. fio logs every I/O (completion time and
latency). That log gives the IOPS of each phase, the longest time without a completion
around each reopen (the stall) and the latencies there. A fresh start of ``qcow2-auto``
in the same round shows what the grown phase should reach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk.bench.daemon import EXPORT_NAME, StorageDaemon
from qdisk.bench.fio import (
    GRACE_SECONDS,
    Completions,
    FioProcess,
    fio_argv,
    latency_log_path,
    read_latency_log,
    read_report,
    run_fio,
)
from qdisk.bench.runner import Progress, ProgressCallback
from qdisk.bench.stats import iops_between, iops_series, latency_percentile_us, longest_gap_ms, median_tree
from qdisk.bench.variants import QCOW2_AUTO, Variant, blockdev_arguments, format_node, qcow2_variants
from qdisk.errors import ToolError
from qdisk.qemu.blockdev import reopen_options
from qdisk.qemu.nodes import Node
from qdisk.qemu.qmp import QmpConnection
from qdisk.settings import Settings

# Each reopen's stall and latencies are taken this long before and after it.
AROUND_MS = 500
# The plot's IOPS bins.
BIN_MS = 100
# The live run's phases, each ended by the reopen to the variant beside it.
PHASES = ("before", "grown", "restored")
FRESH = "fresh-auto"


@dataclass(frozen=True)
class Reopen:
    """One ``blockdev-reopen`` as qdisk saw it: the variant whose cache it applied, and
    when the command was sent and answered (Unix epoch, ms: the clock of fio's log)."""

    to: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class LiveRound:
    """What one round recorded: the live run (its completions, its two reopens, the
    daemon's resident memory at the end of each phase) and a fresh start of qcow2-auto."""

    live: Completions
    reopens: tuple[Reopen, Reopen]
    rss_bytes: dict[str, int]
    fresh: Completions


def _span(completions: Completions) -> tuple[float, float]:
    """From the first completion to just after the last."""
    return completions.times_ms[0], completions.times_ms[-1] + 1


def phase_windows(round_: LiveRound) -> dict[str, tuple[float, float]]:
    """Each phase of the live run, between the reopens' answers and sendings."""
    grow, shrink = round_.reopens
    first, end = _span(round_.live)
    windows = {"before": (first, grow.start_ms), "grown": (grow.end_ms, shrink.start_ms),
               "restored": (shrink.end_ms, end)}
    for name, (start, stop) in windows.items():
        if stop <= start:
            raise ToolError("fio", f"completed no I/O in the live run's {name} phase (it started "
                                   "late or ended early)")
    return windows


def analyse(round_: LiveRound) -> dict[str, Any]:
    """One round's figures, shaped as JSON (the report gives the median of the rounds)."""
    live, fresh = round_.live, round_.fresh
    windows = phase_windows(round_)
    iops = {name: iops_between(live, *window) for name, window in windows.items()}
    iops[FRESH] = iops_between(fresh, *_span(fresh))
    p99 = {name: latency_percentile_us(live, *window, 99) for name, window in windows.items()}
    p99[FRESH] = latency_percentile_us(fresh, *_span(fresh), 99)
    first = windows["before"][0]
    steady_end = max(round_.reopens[0].start_ms - AROUND_MS, first + 1)
    return {
        "iops": {name: round(value) for name, value in iops.items()},
        "lat-p99-us": {name: _round(value) for name, value in p99.items()},
        "reopens": [_reopen_figures(live, reopen) for reopen in round_.reopens],
        # The same measure away from any reopen: what the machine's noise alone gives.
        "steady-gap-ms": longest_gap_ms(live, first, steady_end),
        "rss-bytes": dict(round_.rss_bytes),
    }


def with_ratio(figures: dict[str, Any]) -> dict[str, Any]:
    """:func:`analyse`'s figures (of a round, or their medians) and how the grown phase
    compares with the fresh start."""
    iops = figures["iops"]
    return {**figures, f"grown/{FRESH}": round(iops["grown"] / iops[FRESH], 3)}


def _reopen_figures(live: Completions, reopen: Reopen) -> dict[str, Any]:
    window = (reopen.start_ms - AROUND_MS, reopen.end_ms + AROUND_MS)
    return {
        "to": reopen.to,
        "qmp-ms": round(reopen.end_ms - reopen.start_ms, 1),
        "stall-ms": longest_gap_ms(live, *window),
        "lat-p99-us": _round(latency_percentile_us(live, *window, 99)),
        "lat-max-us": _round(latency_percentile_us(live, *window, 100)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def timeline(round_: LiveRound) -> dict[str, Any]:
    """IOPS per bin of the live run and of the fresh start, and the reopens, in seconds
    from the live run's first completion: what the plot draws."""
    first, end = _span(round_.live)
    return {
        "bin-ms": BIN_MS,
        "live-iops": [round(value) for value in iops_series(round_.live, first, end, BIN_MS)],
        f"{FRESH}-iops": [round(value) for value in iops_series(round_.fresh, *_span(round_.fresh), BIN_MS)],
        "reopens": [{"to": reopen.to, "start-s": round((reopen.start_ms - first) / 1000, 3),
                     "end-s": round((reopen.end_ms - first) / 1000, 3)} for reopen in round_.reopens],
    }


@dataclass(frozen=True)
class LiveChangeReport:
    """Each round's figures (:func:`analyse`) and the timeline of the first round."""

    phase_seconds: int
    rounds: list[dict[str, Any]]
    timeline: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        """The median of each figure over the rounds, and the ratio of the medians."""
        return with_ratio(median_tree(self.rounds))

    def to_json(self) -> dict[str, Any]:
        return {"phase-seconds": self.phase_seconds, "around-reopen-ms": AROUND_MS, **self.summary,
                "rounds": self.rounds, "timeline": self.timeline}


def run_live_change(qcow2: Path, settings: Settings, *, runtime: int, rounds: int, aio: str,
                    workdir: Path, progress: ProgressCallback) -> LiveChangeReport:
    """Rounds of a live run (phases of ``runtime`` seconds) and a fresh qcow2-auto start."""
    default, auto = qcow2_variants(qcow2, aio)
    analysed, first_timeline = [], None
    for number in range(1, rounds + 1):
        step = f"live change, round {number}/{rounds}"
        progress(Progress(number - 1, rounds, f"{step}: reopening under load"))
        live, reopens, rss = _live_run(default, auto, settings, runtime, workdir)
        progress(Progress(number - 1, rounds, f"{step}: fresh start of {QCOW2_AUTO}"))
        round_ = LiveRound(live, reopens, rss, _fresh_run(auto, settings, runtime, workdir))
        figures = analyse(round_)
        analysed.append(figures)
        first_timeline = first_timeline or timeline(round_)
        stalls = ", ".join(f"{reopen['stall-ms']:g} ms" for reopen in figures["reopens"])
        progress(Progress(number, rounds, f"{step}: stalls {stalls}, "
                                          f"grown/{FRESH} {with_ratio(figures)[f'grown/{FRESH}']:.2f}"))
    assert first_timeline is not None
    return LiveChangeReport(runtime, analysed, first_timeline)


def _live_run(default: Variant, auto: Variant, settings: Settings, phase_seconds: int,
              workdir: Path) -> tuple[Completions, tuple[Reopen, Reopen], dict[str, int]]:
    """fio reads ``default`` for three phases; the first two end in a reopen (to ``auto``'s
    format node, then back to ``default``'s)."""
    arguments = blockdev_arguments(default.drive, settings)
    targets = [(auto.name, format_node(auto.drive, settings)),
               (default.name, format_node(default.drive, settings))]
    fio, output, log = settings.tools.fio, workdir / "fio.json", workdir / "live"
    runtime = len(PHASES) * phase_seconds
    reopens, rss = [], {}
    with StorageDaemon(settings.tools.qemu_storage_daemon, arguments.objects, arguments.blockdevs,
                       arguments.top_node_name, workdir, monitor=True) as daemon, \
            QmpConnection(daemon.qmp_socket) as qmp:
        argv = fio_argv(fio, daemon.socket, EXPORT_NAME, runtime, output, latency_log=log)
        with FioProcess(argv, workdir / "fio.stderr", runtime + GRACE_SECONDS) as load:
            launched = time.monotonic()
            for number, (phase, (name, node)) in enumerate(zip(PHASES, targets), 1):
                time.sleep(max(0.0, launched + number * phase_seconds - time.monotonic()))
                rss[phase] = daemon.rss_bytes()
                reopens.append(_reopen(qmp, name, node))
            load.wait()
        rss[PHASES[-1]] = daemon.rss_bytes()
    read_report(fio, output)  # fio's own verdict on the run
    grow, shrink = reopens
    return _take_log(fio, log), (grow, shrink), rss


def _reopen(qmp: QmpConnection, to: str, node: Node) -> Reopen:
    options = reopen_options(node)
    start_ms = time.time() * 1000
    qmp.execute("blockdev-reopen", {"options": [options]})
    return Reopen(to, start_ms, time.time() * 1000)


def _fresh_run(auto: Variant, settings: Settings, runtime: int, workdir: Path) -> Completions:
    arguments = blockdev_arguments(auto.drive, settings)
    log = workdir / "fresh"
    with StorageDaemon(settings.tools.qemu_storage_daemon, arguments.objects, arguments.blockdevs,
                       arguments.top_node_name, workdir) as daemon:
        run_fio(settings.tools.fio, daemon.socket, EXPORT_NAME, runtime, workdir / "fio.json",
                latency_log=log)
    return _take_log(settings.tools.fio, log)


def _take_log(fio: str, prefix: Path) -> Completions:
    """Read fio's latency log and remove it (a log of a long run is tens of MB)."""
    path = latency_log_path(prefix)
    try:
        return read_latency_log(fio, path)
    finally:
        path.unlink(missing_ok=True)

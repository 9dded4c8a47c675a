"""Drawing the sweep (IOPS against L2 cache size, one curve per entry size) and the live
change (IOPS over time, the reopens marked)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qdisk.bench.livechange import FRESH, LiveChangeReport
from qdisk.bench.runner import SweepReport
from qdisk.errors import InvalidInputError
from qdisk.units import MIB

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")


def check_plot_path(path: Path) -> None:
    """Refuse a plot file that cannot be written (before minutes of measuring): another file
    type, or a directory that does not exist."""
    if path.suffix.lower() not in FORMATS:
        raise InvalidInputError(f"{path}: the plot is written as .png or .svg")
    if not path.absolute().parent.is_dir():
        raise InvalidInputError(f"{path}: cannot write the plot: no directory {path.absolute().parent}")


def _figure() -> Figure:
    # The object API, not pyplot: no global state, no GUI backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(8, 5), layout="constrained")


def _save(figure: Figure, path: Path) -> None:
    try:
        figure.savefig(path)
    except OSError as error:
        raise InvalidInputError(f"{path}: cannot write the plot: {error.strerror}") from None


def plot_sweep(report: SweepReport, path: Path) -> None:
    """Write the sweep's plot to ``path``; PNG or SVG after its extension."""
    check_plot_path(path)
    figure = _figure()
    axes = figure.add_subplot()
    for entry in sorted({p.entry_bytes for p in report.points}):
        points = sorted((p for p in report.points if p.entry_bytes == entry), key=lambda p: p.l2_cache_bytes)
        axes.plot([p.l2_cache_bytes / MIB for p in points], [p.summary.iops for p in points],
                  marker="o", label=f"L2 entry {entry // 1024} KiB")
    if report.raw is not None:
        axes.axhline(report.raw.iops, color="black", linestyle=":", label="raw (physical limit)")
    axes.axvline(report.default_l2_bytes / MIB, color="tab:red", linestyle="--",
                 label=f"QEMU default ({report.default_l2_bytes / MIB:g} MiB)")
    axes.axvline(report.auto_l2_bytes / MIB, color="tab:green", linestyle="--",
                 label=f"qdisk auto ({report.auto_l2_bytes / MIB:g} MiB)")
    axes.set_xscale("log", base=2)
    sizes = sorted({p.l2_cache_bytes / MIB for p in report.points})
    axes.set_xticks(sizes, [f"{size:g}" for size in sizes])
    axes.minorticks_off()
    axes.set_xlabel("L2 cache size (MiB)")
    axes.set_ylabel("IOPS (4 KiB random reads, iodepth 16)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"qcow2 L2 cache sweep, {report.l2_needed_bytes / MIB:g} MiB of L2 cover the image "
                   f"(QEMU {report.qemu})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_live_change(report: LiveChangeReport, qemu: str, path: Path) -> None:
    """IOPS over time of the first round's live run, a fresh qcow2-auto start drawn from
    the moment the cache grew, and the reopens with their stalls (medians of the rounds)."""
    check_plot_path(path)
    timeline = report.timeline
    bin_s = timeline["bin-ms"] / 1000
    figure = _figure()
    axes = figure.add_subplot()
    live = timeline["live-iops"]
    axes.plot([(index + 0.5) * bin_s for index in range(len(live))], live, color="tab:blue",
              label="qcow2-default, reopened live")
    grown_at = timeline["reopens"][0]["end-s"]
    fresh = timeline[f"{FRESH}-iops"]
    axes.plot([grown_at + (index + 0.5) * bin_s for index in range(len(fresh))], fresh, color="tab:green",
              linestyle="--", label="qcow2-auto, fresh start (drawn from the first reopen)")
    for reopen, figures in zip(timeline["reopens"], report.summary["reopens"]):
        axes.axvline(reopen["start-s"], color="tab:red", linestyle=":")
        axes.annotate(f"reopen to {reopen['to']}\nstall {figures['stall-ms']:g} ms (median)",
                      (reopen["start-s"], 0.97), xycoords=("data", "axes fraction"),
                      xytext=(4, 0), textcoords="offset points", va="top", fontsize="small")
    axes.set_xlabel("seconds")
    axes.set_ylabel(f"IOPS per {timeline['bin-ms']} ms (4 KiB random reads, iodepth 16)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"qcow2 cache changed under load by blockdev-reopen (QEMU {qemu})")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="center left")
    _save(figure, path)

"""`qdisk bench`: measure the qcow2 cache through QEMU's block layer."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from qdisk import bench, units
from qdisk.cli.common import echo_json, pass_settings
from qdisk.errors import InvalidInputError
from qdisk.settings import Settings
from qdisk.units import MIB


class ProgressDisplay:
    """On a terminal, one line rewritten in place: a bar, the count and what runs now.
    Otherwise one plain line per phase and per finished step, which logs keep readable."""

    BAR_WIDTH = 20

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._shown = (-1, -1)  # (done, total) of the last plain line
        self._line_open = False  # a terminal line that still needs its newline

    def __call__(self, progress: bench.Progress) -> None:
        if self._tty:
            self._rewrite_line(progress)
            return
        # A new phase (new total) or a finished step; starts of steps would double the lines.
        if progress.total != self._shown[1] or progress.done > self._shown[0]:
            click.echo(f"[{progress.done}/{progress.total}] {progress.message}", file=self._stream)
        self._shown = (progress.done, progress.total)

    def _rewrite_line(self, progress: bench.Progress) -> None:
        filled = self.BAR_WIDTH * progress.done // max(progress.total, 1)
        line = (f"[{'#' * filled}{'-' * (self.BAR_WIDTH - filled)}] "
                f"{progress.done}/{progress.total} {progress.message}")
        # A line that wraps cannot be rewritten in place: cut it to the terminal's width.
        self._stream.write("\r\x1b[K" + line[:self._columns() - 1])
        self._stream.flush()
        self._line_open = True

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns if columns > 0 else 80  # a pseudo-terminal may report 0

    def close(self) -> None:
        if self._line_open:
            self._stream.write("\n")
            self._stream.flush()
            self._line_open = False


def parse_size(text: str) -> int:
    """``1T``, ``512G``: a disk size as in a drive's ``size=``."""
    size = units.parse_size(text)
    if size is None or not MIB <= size <= units.INT64_MAX:
        raise click.BadParameter(f"{text!r} is not a disk size of at least 1M and below 8E "
                                 f"(e.g. 1T, 64G)", param_hint="--size")
    return size


def _print_bench(report: bench.BenchReport) -> None:
    _print_variants(report.variants, report.ratios)
    _print_machine(report.machine, report.qemu)


def _print_variants(variants: dict[str, bench.Summary], ratios: dict[str, float],
                    block_bytes: int | None = None) -> None:
    """One line per variant (with MiB/s when the block size is given), then the ratios."""
    rate = f"{'MiB/s':>10}" if block_bytes else ""
    click.echo(f"{'variant':<16}{'IOPS':>10}{rate}{'p50 µs':>10}{'p99 µs':>10}{'RSS MiB':>10}")
    for name, summary in variants.items():
        rate = f"{summary.iops * block_bytes / MIB:>10,.1f}" if block_bytes else ""
        click.echo(f"{name:<16}{summary.iops:>10,.0f}{rate}{summary.lat_p50_us:>10.1f}"
                   f"{summary.lat_p99_us:>10.1f}{summary.rss_bytes / MIB:>10.1f}")
    for name, value in ratios.items():
        click.echo(f"{name}: {value:.2f}")


def _print_sweep(report: bench.SweepReport) -> None:
    click.echo(f"L2 cache needed for the whole image: {report.l2_needed_bytes / MIB:g} MiB; "
               f"QEMU's default: {report.default_l2_bytes / MIB:g} MiB "
               f"(entry {report.default_entry_bytes} bytes)")
    click.echo(f"{'L2 MiB':>8}{'entry':>8}{'coverage':>10}{'IOPS':>10}{'p99 µs':>10}")
    for point in report.points:
        click.echo(f"{point.l2_cache_bytes / MIB:>8g}{point.entry_bytes:>8}{point.coverage:>10.1%}"
                   f"{point.summary.iops:>10,.0f}{point.summary.lat_p99_us:>10.1f}")
    if report.raw is not None:
        click.echo(f"raw: {report.raw.iops:,.0f} IOPS")
    _print_machine(report.machine, report.qemu)


def _print_scenarios(report: bench.ScenarioReport) -> None:
    if report.live_change is not None:
        _print_live_change(report.live_change)
    if report.idle_memory is not None:
        _print_idle_memory(report.idle_memory)
    for name, result in report.workloads.items():
        click.echo(f"workload {name}: {result.workload.summary}")
        _print_variants(result.variants, result.ratios, result.workload.block_bytes)
    _print_machine(report.machine, report.qemu)


def _print_live_change(report: bench.LiveChangeReport) -> None:
    summary = report.summary
    click.echo(f"live change (medians of {len(report.rounds)} rounds, phases of {report.phase_seconds} s):")
    click.echo(f"{'phase':<16}{'IOPS':>10}{'p99 µs':>10}")
    for phase, iops in summary["iops"].items():
        click.echo(f"{phase:<16}{iops:>10,.0f}{_number(summary['lat-p99-us'][phase], '.1f'):>10}")
    click.echo(f"grown/fresh-auto: {summary['grown/fresh-auto']:.2f}")
    for reopen in summary["reopens"]:
        click.echo(f"reopen to {reopen['to']}: stall {reopen['stall-ms']:g} ms, QMP {reopen['qmp-ms']:g} ms, "
                   f"p99 {_number(reopen['lat-p99-us'], '.0f')} µs, max {_number(reopen['lat-max-us'], '.0f')} µs "
                   f"within {bench.AROUND_MS} ms")
    click.echo(f"longest gap away from the reopens: {summary['steady-gap-ms']:g} ms")


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_idle_memory(report: bench.IdleMemoryReport) -> None:
    click.echo(f"idle memory (qemu-system, cache-clean-interval {report.clean_interval} s, "
               f"{bench.idle_seconds(report.clean_interval):g} s idle; medians):")
    click.echo(f"{'variant':<18}{'base MiB':>10}{'read MiB':>10}{'idle MiB':>10}{'freed s':>9}"
               f"{'cold':>9}{'reading':>9}{'resumed':>9}")
    for name, figures in report.to_json()["variants"].items():
        rss, iops = figures["rss-bytes"], figures["iops"]
        click.echo(f"{name:<18}{rss['baseline'] / MIB:>10.1f}{rss['reading'] / MIB:>10.1f}{rss['idle'] / MIB:>10.1f}"
                   f"{_number(figures['released-after-s'], '.2f'):>9}{iops['cold']:>9,}{iops['reading']:>9,}"
                   f"{iops['resumed']:>9,}")


def _print_machine(machine: dict[str, Any], qemu: str) -> None:
    memory = machine["memory-bytes"]
    memory_text = f"{memory / (1 << 30):.1f} GiB" if memory else "memory unknown"
    click.echo(f"machine: {machine['cores']} cores, {memory_text}, {machine['cpu']}, "
               f"Linux {machine['kernel']}; QEMU {qemu}, {machine['fio']}")


@click.command(name="bench")
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--size", default="1T", show_default=True, metavar="SIZE",
              help="Size of the scratch images (without IMAGE).")
@click.option("--runtime", type=click.IntRange(min=1), default=bench.DEFAULT_RUNTIME, show_default=True,
              help="Seconds of fio per measurement (per phase with --live-change).")
@click.option("--rounds", type=click.IntRange(min=1), default=bench.DEFAULT_ROUNDS, show_default=True,
              help="Interleaved rounds over the variants; medians are reported.")
@click.option("--aio", type=click.Choice(bench.AIO_MODES), default="native", show_default=True,
              help="aio mode of the file node.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--sweep", is_flag=True, help="IOPS against L2 cache size and entry size.")
@click.option("--live-change", is_flag=True,
              help="Grow and shrink the cache by blockdev-reopen while fio reads: stalls, IOPS before and after.")
@click.option("--idle-memory", is_flag=True,
              help="Resident memory after idle time, with and without a short cache-clean-interval.")
@click.option("--workload", "workloads", multiple=True, type=click.Choice(list(bench.WORKLOADS)),
              help="Measure this load against raw, qcow2-default and qcow2-auto (repeatable).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the sweep (implies --sweep), or with --live-change the live change, into FILE "
                   "(.png or .svg).")
@pass_settings
def command(settings: Settings, image: Path | None, size: str, runtime: int, rounds: int, aio: str,
            as_json: bool, sweep: bool, live_change: bool, idle_memory: bool, workloads: tuple[str, ...],
            plot: Path | None) -> None:
    """Measure the qcow2 cache through qemu-storage-daemon and fio, per cache variant.

    By default: 4 KiB random reads of each variant. Without IMAGE, scratch images of
    --size are made in a temporary directory (a raw file, a metadata-preallocated qcow2
    and a thin overlay on it) and removed after. With IMAGE, the variants that apply to
    it are measured, read-only.
    """
    scenarios = live_change or idle_memory or bool(workloads)
    if scenarios and sweep:
        raise InvalidInputError("--sweep cannot be combined with --live-change, --idle-memory or --workload")
    if plot and scenarios and not live_change:
        raise InvalidInputError(f"{plot}: --plot draws the sweep or the live change (--live-change)")
    if plot:
        bench.check_plot_path(plot)
    display = ProgressDisplay(sys.stderr)
    options: dict[str, Any] = {"image": image, "size": parse_size(size), "runtime": runtime,
                               "rounds": rounds, "aio": aio, "progress": display}
    try:
        if scenarios:
            report: bench.BenchReport | bench.SweepReport | bench.ScenarioReport = bench.run_scenarios(
                settings, live_change=live_change, idle_memory=idle_memory, workloads=workloads, **options)
        elif sweep or plot:
            report = bench.run_sweep(settings, **options)
        else:
            report = bench.run_bench(settings, **options)
    finally:
        display.close()
    if plot and isinstance(report, bench.SweepReport):
        bench.plot_sweep(report, plot)
    elif plot and isinstance(report, bench.ScenarioReport) and report.live_change is not None:
        bench.plot_live_change(report.live_change, report.qemu, plot)
    if as_json:
        echo_json(report.to_json())
    elif isinstance(report, bench.SweepReport):
        _print_sweep(report)
    elif isinstance(report, bench.ScenarioReport):
        _print_scenarios(report)
    else:
        _print_bench(report)

"""`qdisk bench`: measure the qcow2 cache through QEMU's block layer."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from qdisk import bench, propstring
from qdisk.cli.common import echo_json, pass_settings
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
    size = propstring.parse_size(text)
    if size is None or size < MIB:
        raise click.BadParameter(f"{text!r} is not a disk size of at least 1M (e.g. 1T, 64G)",
                                 param_hint="--size")
    return size


def _print_bench(report: bench.BenchReport) -> None:
    click.echo(f"{'variant':<16}{'IOPS':>10}{'p50 µs':>10}{'p99 µs':>10}{'RSS MiB':>10}")
    for name, summary in report.variants.items():
        click.echo(f"{name:<16}{summary.iops:>10,.0f}{summary.lat_p50_us:>10.1f}"
                   f"{summary.lat_p99_us:>10.1f}{summary.rss_bytes / MIB:>10.1f}")
    for name, value in report.ratios.items():
        click.echo(f"{name}: {value:.2f}")
    _print_machine(report.machine, report.qemu)


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
              help="Seconds of fio per measurement.")
@click.option("--rounds", type=click.IntRange(min=1), default=bench.DEFAULT_ROUNDS, show_default=True,
              help="Interleaved rounds over the variants; medians are reported.")
@click.option("--aio", type=click.Choice(bench.AIO_MODES), default="native", show_default=True,
              help="aio mode of the file node.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--sweep", is_flag=True, help="IOPS against L2 cache size and entry size.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the sweep into FILE (.png or .svg); implies --sweep.")
@pass_settings
def command(settings: Settings, image: Path | None, size: str, runtime: int, rounds: int, aio: str,
            as_json: bool, sweep: bool, plot: Path | None) -> None:
    """Measure random reads through qemu-storage-daemon and fio, per cache variant.

    Without IMAGE, scratch images of --size are made in a temporary directory (a raw
    file, a metadata-preallocated qcow2 and a thin overlay on it) and removed after.
    With IMAGE, the variants that apply to it are measured, read-only.
    """
    if plot:
        bench.check_plot_path(plot)
    display = ProgressDisplay(sys.stderr)
    run = bench.run_sweep if sweep or plot else bench.run_bench
    try:
        report = run(settings, image=image, size=parse_size(size),
                     runtime=runtime, rounds=rounds, aio=aio, progress=display)
    finally:
        display.close()
    if isinstance(report, bench.SweepReport) and plot:
        bench.plot_sweep(report, plot)
    if as_json:
        echo_json(report.to_json())
    elif isinstance(report, bench.SweepReport):
        _print_sweep(report)
    else:
        _print_bench(report)

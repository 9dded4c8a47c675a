"""Measuring the qcow2 cache for real: qemu-storage-daemon serves each variant, fio reads it.

The library never prints: progress reaches the caller through a callback.
"""

from qdisk.bench.fio import FioResult, parse_fio_json
from qdisk.bench.plot import check_plot_path, plot_sweep
from qdisk.bench.runner import (
    DEFAULT_ROUNDS,
    DEFAULT_RUNTIME,
    DEFAULT_SIZE,
    BenchReport,
    Progress,
    ProgressCallback,
    SweepPoint,
    SweepReport,
    run_bench,
    run_sweep,
)
from qdisk.bench.stats import Summary, ratios, summarize
from qdisk.bench.variants import AIO_MODES, VARIANT_NAMES

__all__ = [
    "AIO_MODES", "DEFAULT_ROUNDS", "DEFAULT_RUNTIME", "DEFAULT_SIZE", "VARIANT_NAMES",
    "BenchReport", "FioResult", "Progress", "ProgressCallback", "Summary", "SweepPoint", "SweepReport",
    "check_plot_path", "parse_fio_json", "plot_sweep", "ratios", "run_bench", "run_sweep", "summarize",
]

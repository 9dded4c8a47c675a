"""Measuring the qcow2 cache for real: qemu-storage-daemon serves each variant, fio reads it.

The library never prints: progress reaches the caller through a callback.
"""

from qdisk.bench.fio import WORKLOADS, FioResult, parse_fio_json
from qdisk.bench.idle import IdleMemoryReport, idle_seconds
from qdisk.bench.livechange import AROUND_MS, LiveChangeReport
from qdisk.bench.plot import check_plot_path, plot_live_change, plot_sweep
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
from qdisk.bench.scenarios import ScenarioReport, WorkloadResult, check_workloads, run_scenarios
from qdisk.bench.stats import Summary, ratios, summarize
from qdisk.bench.variants import AIO_MODES, VARIANT_NAMES

__all__ = [
    "AIO_MODES", "AROUND_MS", "DEFAULT_ROUNDS", "DEFAULT_RUNTIME", "DEFAULT_SIZE", "VARIANT_NAMES", "WORKLOADS",
    "BenchReport", "FioResult", "IdleMemoryReport", "LiveChangeReport", "Progress", "ProgressCallback",
    "ScenarioReport", "Summary", "SweepPoint", "SweepReport", "WorkloadResult",
    "check_plot_path", "check_workloads", "idle_seconds", "parse_fio_json", "plot_live_change", "plot_sweep",
    "ratios", "run_bench", "run_scenarios", "run_sweep", "summarize",
]

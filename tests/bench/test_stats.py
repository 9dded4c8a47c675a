"""Medians and ratios."""

from __future__ import annotations

import pytest

from qdisk.bench.fio import FioResult
from qdisk.bench.runner import sweep_sizes
from qdisk.bench.stats import ratios, summarize

MIB = 1 << 20


def test_each_metric_is_the_median_of_its_own_rounds() -> None:
    results = [FioResult(100, 5, 50), FioResult(300, 1, 10), FioResult(200, 3, 90)]
    summary = summarize(results, [30, 10, 20])
    assert (summary.iops, summary.lat_p50_us, summary.lat_p99_us) == (200, 3, 50)
    assert summary.rss_bytes == 20
    assert summary.rounds == 3


def test_an_even_number_of_rounds_averages_the_middle_two() -> None:
    summary = summarize([FioResult(100, 1, 2), FioResult(200, 3, 4)], [10, 21])
    assert (summary.iops, summary.lat_p50_us, summary.lat_p99_us, summary.rss_bytes) == (150, 2, 3, 16)


@pytest.mark.parametrize("rss", [[], [1, 2]])
def test_summary_needs_one_memory_reading_per_round(rss: list[int]) -> None:
    results = [] if not rss else [FioResult(1, 1, 1)]
    with pytest.raises(ValueError):
        summarize(results, rss)


def test_ratios_are_computed_for_measured_pairs_only() -> None:
    iops = {"raw": 200.0, "qcow2-auto": 180.0, "qcow2-default": 30.0}
    pairs = [("qcow2-auto", "raw"), ("qcow2-auto", "qcow2-default"), ("chain-auto", "chain-top-only")]
    assert ratios(iops, pairs) == {"qcow2-auto/raw": 0.9, "qcow2-auto/qcow2-default": 6.0}


def test_sweep_sizes_halve_down_from_full_coverage_in_whole_mib() -> None:
    # 1 TiB with 64 KiB clusters: 128 MiB of L2 cover it.
    assert sweep_sizes(128 * MIB) == [2, 4, 8, 16, 32, 64, 128]


def test_sweep_sizes_never_go_below_one_mib_nor_repeat() -> None:
    assert sweep_sizes(MIB // 8) == [1]
    assert sweep_sizes(3 * MIB) == [1, 2, 3]

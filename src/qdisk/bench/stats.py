"""Summaries of repeated measurements: medians, because these shared machines are noisy."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from qdisk.bench.fio import FioResult


@dataclass(frozen=True)
class Summary:
    """The median of each metric over a variant's rounds."""

    iops: float
    lat_p50_us: float
    lat_p99_us: float
    rss_bytes: int
    rounds: int


def summarize(results: Sequence[FioResult], rss: Sequence[int]) -> Summary:
    """Medians over the rounds (each metric on its own)."""
    if not results or len(results) != len(rss):
        raise ValueError("need one resident-memory reading per fio result, and at least one")
    return Summary(
        iops=statistics.median(r.iops for r in results),
        lat_p50_us=statistics.median(r.lat_p50_us for r in results),
        lat_p99_us=statistics.median(r.lat_p99_us for r in results),
        rss_bytes=round(statistics.median(rss)),
        rounds=len(results),
    )


def ratios(iops: Mapping[str, float], pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """``{"a/b": iops[a] / iops[b]}`` for each pair whose two variants were both measured."""
    return {f"{a}/{b}": iops[a] / iops[b] for a, b in pairs if a in iops and b in iops}

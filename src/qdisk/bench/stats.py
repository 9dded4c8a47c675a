"""Summaries of repeated measurements (medians, because these shared machines are noisy),
and the statistics of one run over time."""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qdisk.bench.fio import Completions, FioResult


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


# --- one run's completions over time (fio's latency log) ---------------------------------


def _window(completions: Completions, start_ms: float, end_ms: float) -> tuple[int, int]:
    """The index range of the completions in ``[start_ms, end_ms)``."""
    times = completions.times_ms
    return bisect.bisect_left(times, start_ms), bisect.bisect_left(times, end_ms)


def iops_between(completions: Completions, start_ms: float, end_ms: float) -> float:
    """Completions per second in ``[start_ms, end_ms)``."""
    if end_ms <= start_ms:
        raise ValueError(f"an empty window: {start_ms} .. {end_ms} ms")
    first, last = _window(completions, start_ms, end_ms)
    return (last - first) * 1000 / (end_ms - start_ms)


def longest_gap_ms(completions: Completions, start_ms: float, end_ms: float) -> float:
    """The longest time in ``[start_ms, end_ms)`` without a completion (the window's
    edges count as bounds: a window without completions is one gap). fio stamps whole
    milliseconds, so the result is exact to about 1 ms."""
    first, last = _window(completions, start_ms, end_ms)
    bounds = [start_ms, *completions.times_ms[first:last], end_ms]
    return max(later - earlier for earlier, later in zip(bounds, bounds[1:]))


def latency_percentile_us(completions: Completions, start_ms: float, end_ms: float,
                          percent: float) -> float | None:
    """The ``percent`` percentile (nearest rank) of the latencies of the I/Os that
    completed in ``[start_ms, end_ms)``, in µs; None without completions."""
    first, last = _window(completions, start_ms, end_ms)
    latencies = sorted(completions.latencies_ns[first:last])
    if not latencies:
        return None
    rank = max(1, math.ceil(percent / 100 * len(latencies)))
    return latencies[rank - 1] / 1000


def iops_series(completions: Completions, start_ms: float, end_ms: float, bin_ms: int) -> list[float]:
    """IOPS in consecutive bins of ``bin_ms`` from ``start_ms`` (a last partial bin is dropped)."""
    return [iops_between(completions, start, start + bin_ms)
            for start in range(math.floor(start_ms), math.floor(end_ms) - bin_ms + 1, bin_ms)]


def median_tree(trees: Sequence[Any]) -> Any:
    """Trees of one shape (dicts, lists, numbers), one per round, as one tree of medians:
    each number the median of its place over the rounds that have a number there (None
    if none has; integers stay integers); other values are the first tree's."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: median_tree([tree[key] for tree in trees]) for key in first}
    if isinstance(first, list):
        return [median_tree([tree[index] for tree in trees]) for index in range(len(first))]
    numbers = [value for value in trees if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if not numbers:
        return first
    middle = statistics.median(numbers)
    return round(middle) if all(isinstance(value, int) for value in numbers) else middle

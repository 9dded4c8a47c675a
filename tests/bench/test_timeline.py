"""fio's per-I/O latency log and the statistics over time: recorded logs, no timing."""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest

from qdisk.bench.fio import Completions, parse_latency_log
from qdisk.bench.livechange import (
    LiveChangeReport,
    LiveRound,
    Reopen,
    analyse,
    phase_windows,
    timeline,
    with_ratio,
)
from qdisk.bench.stats import iops_between, iops_series, latency_percentile_us, longest_gap_ms, median_tree
from qdisk.errors import ToolError

DATA = Path(__file__).parent / "data"


def completions(*pairs: tuple[int, int]) -> Completions:
    return Completions(array("q", [time for time, _ in pairs]), array("q", [lat for _, lat in pairs]))


def test_a_recorded_log_gives_each_completion_time_and_latency() -> None:
    with (DATA / "live-change_lat.1.log").open() as lines:
        log = parse_latency_log(lines)
    assert len(log.times_ms) == len(log.latencies_ns) == 1500  # 3 s at 500 IOPS
    # The file's first line: "1795999468927, 964325, 0, 4096, 0".
    assert (log.times_ms[0], log.latencies_ns[0]) == (1795999468927, 964325)
    assert list(log.times_ms) == sorted(log.times_ms)


def test_lines_out_of_order_are_sorted_by_time_with_their_latencies() -> None:
    log = parse_latency_log(["20, 2, 0, 4096, 0", "10, 1, 0, 4096, 0", "", "20, 3, 1, 4096, 8192, 0"])
    assert (list(log.times_ms), list(log.latencies_ns)) == ([10, 20, 20], [1, 2, 3])


@pytest.mark.parametrize(("lines", "message"), [
    ([], "fio: live.log holds no completions"),
    (["", "  "], "fio: live.log holds no completions"),
    (["10, 1", "fio: connected to NBD server"],
     "fio: live.log line 2: not 'time, latency, ...': 'fio: connected to NBD server'"),
    (["10"], "fio: live.log line 1: not 'time, latency, ...': '10'"),
    (["10, 1.5, 0"], "fio: live.log line 1: not 'time, latency, ...': '10, 1.5, 0'"),
    (["-5, 1, 0"], "fio: live.log line 1: a negative time or latency: '-5, 1, 0'"),
    (["9" * 200], "fio: live.log line 1: not 'time, latency, ...': '" + "9" * 80 + "'"),
])
def test_a_log_that_is_not_fios_is_a_tool_error_naming_the_line(lines: list[str], message: str) -> None:
    with pytest.raises(ToolError) as caught:
        parse_latency_log(lines, name="live.log")
    assert str(caught.value) == message


def test_iops_count_the_completions_in_a_half_open_window() -> None:
    log = completions(*((t, 1) for t in (0, 100, 200, 500, 999, 1000)))
    assert iops_between(log, 0, 1000) == 5
    assert iops_between(log, 0, 500) == 6  # 3 in half a second
    assert iops_between(log, 2000, 3000) == 0
    with pytest.raises(ValueError):
        iops_between(log, 10, 10)


def test_the_longest_gap_counts_the_window_edges_as_bounds() -> None:
    log = completions((100, 1), (101, 1), (150, 1), (152, 1))
    assert longest_gap_ms(log, 100, 160) == 49
    assert longest_gap_ms(log, 0, 153) == 100  # from the window's start to the first completion
    assert longest_gap_ms(log, 140, 400) == 248  # from the last completion to the window's end
    assert longest_gap_ms(log, 200, 230) == 30  # no completion at all: the whole window


def test_latency_percentiles_are_nearest_rank_in_microseconds() -> None:
    log = completions(*((t, (t + 1) * 1000) for t in range(100)))  # latencies 1..100 µs
    assert latency_percentile_us(log, 0, 100, 99) == 99
    assert latency_percentile_us(log, 0, 100, 100) == 100
    assert latency_percentile_us(log, 0, 100, 50) == 50
    assert latency_percentile_us(log, 0, 1, 99) == 1  # a single completion
    assert latency_percentile_us(log, 200, 300, 99) is None


def test_iops_series_are_whole_bins_from_the_start() -> None:
    log = completions(*((t, 1) for t in (0, 10, 99, 100, 250, 301)))
    assert iops_series(log, 0, 302, 100) == [30, 10, 10]  # the partial bin from 300 is dropped
    assert iops_series(log, 0.5, 99.9, 100) == []


def test_medians_of_rounds_keep_the_shape_and_the_integers() -> None:
    rounds = [{"iops": {"a": 1, "b": 2.0}, "gaps": [5, None], "to": "x", "rss": 10},
              {"iops": {"a": 4, "b": 3.0}, "gaps": [1, 7], "to": "x", "rss": 11},
              {"iops": {"a": 2, "b": 1.0}, "gaps": [9, None], "to": "x", "rss": 12}]
    assert median_tree(rounds) == {"iops": {"a": 2, "b": 2.0}, "gaps": [5, 7], "to": "x", "rss": 11}
    assert median_tree([{"rss": 10}, {"rss": 13}]) == {"rss": 12}  # 11.5, an integer again
    assert median_tree([None, None]) is None


def test_a_recorded_live_change_gives_the_phases_stalls_and_latencies(live_round: LiveRound) -> None:
    figures = analyse(live_round)
    # fio held to 500 IOPS: every phase runs at about that rate.
    assert figures["iops"] == {"before": 492, "grown": 506, "restored": 501, "fresh-auto": 504}
    assert with_ratio(figures)["grown/fresh-auto"] == round(figures["iops"]["grown"] / 504, 3)
    grow, shrink = figures["reopens"]
    assert (grow["to"], grow["qmp-ms"], shrink["to"], shrink["qmp-ms"]) == ("qcow2-auto", 2.3, "qcow2-default", 5.2)
    # The log has completions 30 ms after the first reopen was sent, then none until 80 ms.
    assert grow["stall-ms"] == 50
    assert shrink["stall-ms"] == 7
    assert grow["lat-p99-us"] <= grow["lat-max-us"] and shrink["lat-p99-us"] <= shrink["lat-max-us"]
    assert figures["steady-gap-ms"] == 6
    assert figures["rss-bytes"] == {"before": 1, "grown": 2, "restored": 3}
    assert set(figures["lat-p99-us"]) == {"before", "grown", "restored", "fresh-auto"}


def test_the_timeline_is_in_seconds_from_the_first_completion(live_round: LiveRound) -> None:
    drawn = timeline(live_round)
    # 1795999468927 .. 1795999471921: 2995 ms, 29 whole bins of 100 ms.
    assert drawn["bin-ms"] == 100 and len(drawn["live-iops"]) == 29
    assert all(400 <= iops <= 600 for iops in drawn["live-iops"])
    assert [reopen["to"] for reopen in drawn["reopens"]] == ["qcow2-auto", "qcow2-default"]
    assert drawn["reopens"][0]["start-s"] == pytest.approx(0.686, abs=0.001)
    assert drawn["reopens"][1]["end-s"] == pytest.approx(1.677, abs=0.001)
    assert len(drawn["fresh-auto-iops"]) == 9


def test_a_phase_without_completions_is_a_tool_error(live_round: LiveRound) -> None:
    first = live_round.live.times_ms[0]
    late = LiveRound(live_round.live, (Reopen("qcow2-auto", first - 10, first - 5), live_round.reopens[1]),
                     live_round.rss_bytes, live_round.fresh)
    with pytest.raises(ToolError, match="^fio: completed no I/O in the live run's before phase"):
        phase_windows(late)


def test_the_report_gives_medians_and_the_ratio_of_the_medians(live_round: LiveRound) -> None:
    rounds = []
    for grown, fresh in ((100, 50), (300, 290), (200, 400)):
        figures = analyse(live_round)
        figures["iops"] = {**figures["iops"], "grown": grown, "fresh-auto": fresh}
        rounds.append(figures)
    report = LiveChangeReport(1, rounds, timeline(live_round))
    summary = report.summary
    assert (summary["iops"]["grown"], summary["iops"]["fresh-auto"]) == (200, 290)
    assert summary["grown/fresh-auto"] == round(200 / 290, 3)  # not the median of 2, 1.03 and 0.5
    assert report.to_json()["rounds"] == rounds and "grown/fresh-auto" not in rounds[0]

"""--live-change, --idle-memory and --workload for real (short runs on small images):
they run, they report, and they leave nothing behind."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qdisk.bench import livechange, run_scenarios, variants
from qdisk.bench.idle import run_idle_memory
from qdisk.qemu.qmp import QmpCommandError
from qdisk.settings import Settings

from cli_helpers import RunQdisk

pytestmark = pytest.mark.qemu

MIB = 1 << 20
CheckNothingLeft = Callable[[], None]


def test_a_live_change_and_a_writing_workload_run_and_report(
        run_qdisk: RunQdisk, tmp_path: Path, assert_nothing_left: CheckNothingLeft) -> None:
    plot = tmp_path / "live.svg"
    result = run_qdisk("bench", "--size", "16M", "--runtime", "1", "--rounds", "1", "--live-change",
                       "--workload", "randrw", "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report) == ["live-change", "workloads", "machine", "qemu"]
    live = report["live-change"]
    assert set(live["iops"]) == {"before", "grown", "restored", "fresh-auto"}
    assert all(value > 0 for value in live["iops"].values())
    assert [reopen["to"] for reopen in live["reopens"]] == ["qcow2-auto", "qcow2-default"]
    for reopen in live["reopens"]:
        assert reopen["qmp-ms"] > 0 and 0 < reopen["stall-ms"] <= 1000 + reopen["qmp-ms"]
    assert set(live["rss-bytes"]) == {"before", "grown", "restored"}
    assert len(live["rounds"]) == 1 and live["rounds"][0]["iops"] == live["iops"]
    assert live["timeline"]["live-iops"] and live["timeline"]["fresh-auto-iops"]
    assert plot.read_text().lstrip().startswith("<?xml")
    randrw = report["workloads"]["randrw"]
    assert list(randrw["variants"]) == ["raw", "qcow2-default", "qcow2-auto"]
    assert all(numbers["iops"] > 0 and numbers["mib-per-s"] > 0 for numbers in randrw["variants"].values())
    assert set(randrw["ratios"]) == {"qcow2-auto/qcow2-default", "qcow2-auto/raw"}
    assert "--rwmixread=70" in randrw["fio"]
    assert_nothing_left()  # the written copies, the logs and every process are gone


def test_a_reopen_that_qemu_refuses_stops_fio_and_the_daemon(
        scratch_parent: Path, monkeypatch: pytest.MonkeyPatch, assert_nothing_left: CheckNothingLeft) -> None:
    def refused_node(drive: str, settings: Settings) -> dict[str, Any]:
        return {**real_format_node(drive, settings), "l2-cache-entry-size": 3}

    real_format_node = livechange.format_node
    monkeypatch.setattr(livechange, "format_node", refused_node)
    with pytest.raises(QmpCommandError, match="^QEMU refused blockdev-reopen: .*power of two"):
        run_scenarios(Settings(home=scratch_parent), live_change=True, size=1 << 30, runtime=1, rounds=1)
    assert_nothing_left()


def test_an_idle_disk_gives_its_cache_back_only_with_a_clean_interval(
        tmp_path: Path, scratch_parent: Path, assert_nothing_left: CheckNothingLeft) -> None:
    settings = Settings(home=tmp_path)
    with tempfile.TemporaryDirectory(dir=scratch_parent) as name:
        workdir = Path(name)
        image = workdir / "base.qcow2"
        # 128 GiB: 16 MiB of L2 tables, which one second of random reads loads.
        variants.create_scratch_image(image, "qcow2", 128 << 30, settings)
        report = run_idle_memory(image, settings, runtime=1, rounds=1, aio="native", workdir=workdir,
                                 progress=lambda progress: None, clean_interval=1).to_json()
    cleaned, kept = report["variants"]["qcow2-auto-clean"], report["variants"]["qcow2-auto"]
    for figures in (cleaned, kept):
        rss = figures["rss-bytes"]
        assert rss["reading"] > rss["baseline"] + 8 * MIB  # the tables were loaded
        assert all(value > 0 for value in figures["iops"].values())
    assert cleaned["idle/baseline"] <= 1.1 and cleaned["released-after-s"] is not None
    assert kept["rss-bytes"]["idle"] >= kept["rss-bytes"]["reading"] - MIB and kept["released-after-s"] is None
    assert report["clean-interval-s"] == 1 and report["idle-s"] == 3
    assert_nothing_left()

"""Real qemu-storage-daemon and fio: every variant runs, nothing is left behind, images stay untouched."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qdisk.bench import VARIANT_NAMES, run_bench, runner
from qdisk.bench.daemon import StorageDaemon
from qdisk.bench.variants import l2_geometry
from qdisk.errors import ToolError
from qdisk.settings import Settings, Tools

from cli_helpers import RunQdisk

pytestmark = pytest.mark.qemu

MIB = 1 << 20


CheckNothingLeft = Callable[[], None]


class DaemonSpy:
    """Records the node graph each daemon was started with, and checks it is alive while fio reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blockdevs: list[list[dict[str, Any]]] = []
        self.pids: list[int] = []
        spy = self
        original_enter = StorageDaemon.__enter__

        def enter(daemon: StorageDaemon) -> StorageDaemon:
            started = original_enter(daemon)
            spy.pids.append(daemon.pid)
            argv = daemon._argv
            spy.blockdevs.append([json.loads(argv[i + 1]) for i, arg in enumerate(argv) if arg == "--blockdev"])
            return started

        monkeypatch.setattr(StorageDaemon, "__enter__", enter)


def nodes_of(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node dict nested in a blockdev (file and backing children)."""
    found = [graph]
    for child in ("file", "backing"):
        if isinstance(graph.get(child), dict):
            found += nodes_of(graph[child])
    return found


def test_every_variant_runs_through_qemu_and_fio_and_everything_is_removed(
        run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch,
        assert_nothing_left: CheckNothingLeft) -> None:
    spy = DaemonSpy(monkeypatch)
    result = run_qdisk("bench", "--size", "256M", "--runtime", "1", "--rounds", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report) == ["variants", "ratios", "machine", "qemu"]
    assert list(report["variants"]) == list(VARIANT_NAMES)
    for name, numbers in report["variants"].items():
        assert set(numbers) == {"iops", "lat-p50-us", "lat-p99-us", "rss-bytes"}, name
        assert numbers["iops"] > 0 and numbers["rss-bytes"] > MIB, name
        assert 0 < numbers["lat-p50-us"] <= numbers["lat-p99-us"], name
    assert set(report["ratios"]) == {"qcow2-auto/raw", "qcow2-auto/qcow2-default", "chain-auto/chain-top-only"}
    assert report["machine"]["cores"] == os.cpu_count()
    assert report["machine"]["fio"].startswith("fio-")
    assert report["qemu"].count(".") == 2
    # One daemon per variant, each serving its own image read-only.
    assert len(set(spy.pids)) == len(VARIANT_NAMES)
    filenames = [{node["filename"] for graph in graphs for node in nodes_of(graph) if "filename" in node}
                 for graphs in spy.blockdevs]
    assert [sorted(Path(name).name for name in names) for names in filenames][:3] == [
        ["raw.img"], ["base.qcow2"], ["base.qcow2"]]
    assert all(node.get("read-only") for graphs in spy.blockdevs for graph in graphs for node in nodes_of(graph))
    # The cache options as qdisk's generator places them: chain-auto sizes the backing image too.
    sized = [[node.get("cache-size") for graph in graphs for node in nodes_of(graph) if node["driver"] == "qcow2"]
             for graphs in spy.blockdevs]
    default, auto, top_only, chain = sized[1:]
    assert default == [None] and auto[0] is not None
    assert len(top_only) == 1 and top_only[0] is not None  # the backing node is QEMU's own, with defaults
    assert len(chain) == 2 and None not in chain
    assert_nothing_left()
    assert result.stderr.count("IOPS") == len(VARIANT_NAMES)  # plain progress lines off a terminal


def test_a_failure_after_the_daemon_started_kills_it_and_removes_the_files(
        scratch_parent: Path, monkeypatch: pytest.MonkeyPatch,
        assert_nothing_left: CheckNothingLeft) -> None:
    spy = DaemonSpy(monkeypatch)
    settings = Settings(home=scratch_parent, tools=Tools(fio=str(scratch_parent / "no-such-fio")))
    with pytest.raises(ToolError, match="program not found"):
        run_bench(settings, size=64 * MIB, runtime=1, rounds=1)
    assert len(spy.pids) == 1
    assert not Path(f"/proc/{spy.pids[0]}").exists()  # killed and reaped
    assert_nothing_left()


def test_ctrl_c_while_fio_runs_kills_the_daemon_and_removes_the_files(
        scratch_parent: Path, monkeypatch: pytest.MonkeyPatch,
        assert_nothing_left: CheckNothingLeft) -> None:
    spy = DaemonSpy(monkeypatch)

    def interrupted_fio(*args: object) -> None:
        assert Path(f"/proc/{spy.pids[-1]}").exists()  # the daemon runs
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_fio", interrupted_fio)
    with pytest.raises(KeyboardInterrupt):
        run_bench(Settings(home=scratch_parent), size=64 * MIB, runtime=1, rounds=1)
    assert not Path(f"/proc/{spy.pids[0]}").exists()
    assert_nothing_left()


def test_a_daemon_that_refuses_its_nodes_reports_qemus_message(
        scratch_parent: Path, assert_nothing_left: CheckNothingLeft) -> None:
    node = {"driver": "file", "node-name": "file0", "filename": str(scratch_parent / "missing.img")}
    with pytest.raises(ToolError, match=r"^qemu-storage-daemon: .*missing\.img.*No such file"):
        with StorageDaemon("qemu-storage-daemon", [], [node], "file0", scratch_parent):
            pass  # pragma: no cover
    for leftover in ("qsd.stderr",):
        (scratch_parent / leftover).unlink()
    assert_nothing_left()


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_a_users_chain_is_measured_with_the_chain_variants_and_never_written(
        tmp_path: Path, make_qcow2: Callable[..., Path], assert_nothing_left: CheckNothingLeft) -> None:
    base = make_qcow2("base.qcow2", "64M", "-o", "preallocation=metadata")
    overlay = make_qcow2("top.qcow2", "64M", "-b", str(base), "-F", "qcow2")
    before = {path: digest(path) for path in (base, overlay)}
    report = run_bench(Settings(home=tmp_path), image=overlay, runtime=1, rounds=1)
    assert list(report.variants) == ["chain-top-only", "chain-auto"]
    assert list(report.ratios) == ["chain-auto/chain-top-only"]
    assert {path: digest(path) for path in (base, overlay)} == before
    assert_nothing_left()


def test_the_sweep_measures_each_entry_size_beside_raw_and_plots_svg(
        run_qdisk: RunQdisk, tmp_path: Path, assert_nothing_left: CheckNothingLeft) -> None:
    plot = tmp_path / "sweep.svg"
    result = run_qdisk("bench", "--size", "64M", "--runtime", "1", "--rounds", "1", "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.stderr
    sweep = json.loads(result.stdout)["sweep"]
    # 64 MiB with 64 KiB clusters: one cluster of L2 covers it; the smallest drive option is 1 MiB.
    assert sweep["l2-needed-bytes"] == 65536
    assert [(p["l2-cache-size"], p["l2-cache-entry-size"], p["coverage"]) for p in sweep["points"]] == [
        (MIB, 4096, 1.0), (MIB, 65536, 1.0)]
    assert all(p["iops"] > 0 for p in sweep["points"]) and sweep["raw"]["iops"] > 0
    # QEMU's default: what the image needs, but never fewer than 2 entries.
    assert sweep["default"] == {"l2-cache-size": 2 * 65536, "l2-cache-entry-size": 65536}
    assert plot.read_text().lstrip().startswith("<?xml") and "<svg" in plot.read_text()
    assert_nothing_left()


@pytest.mark.parametrize(("name", "message"), [
    ("sweep.pdf", "sweep.pdf: the plot is written as .png or .svg"),
    ("missing/sweep.png", "sweep.png: cannot write the plot: no directory "),
])
def test_a_plot_file_that_cannot_be_written_is_refused_before_measuring(
        run_qdisk: RunQdisk, tmp_path: Path, assert_nothing_left: CheckNothingLeft,
        name: str, message: str) -> None:
    result = run_qdisk("bench", "--size", "64M", "--plot", str(tmp_path / name))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "round" not in result.stderr  # nothing was measured
    assert_nothing_left()


def test_a_file_too_small_to_be_a_disk_is_refused_without_measuring(
        run_qdisk: RunQdisk, tmp_path: Path, assert_nothing_left: CheckNothingLeft) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    result = run_qdisk("bench", str(text), "--runtime", "1")
    assert result.exit_code == 2
    assert result.stderr == f"qdisk: {text}: 512 bytes as raw: not a disk image that 4 KiB reads can measure\n"
    assert_nothing_left()


def test_a_path_with_a_comma_is_refused_and_one_with_an_equals_sign_is_measured(
        run_qdisk: RunQdisk, tmp_path: Path, assert_nothing_left: CheckNothingLeft) -> None:
    comma = tmp_path / "a,b.img"
    equals = tmp_path / "a=b.img"
    for path in (comma, equals):
        path.write_bytes(b"")
        os.truncate(path, 16 * MIB)
    result = run_qdisk("bench", str(comma), "--runtime", "1")
    assert result.exit_code == 2
    assert "a,b.img: a path with a comma cannot be named in a drive string" in result.stderr
    result = run_qdisk("bench", str(equals), "--runtime", "1", "--rounds", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert list(json.loads(result.stdout)["variants"]) == ["raw"]
    assert_nothing_left()


def test_the_sweep_marks_qdisks_auto_l2_size_from_qemus_split_of_the_cache(
        tmp_path: Path, make_qcow2: Callable[..., Path]) -> None:
    image = make_qcow2("big.qcow2", "1T")
    geometry = l2_geometry(image, Settings(home=tmp_path))
    # 1 TiB, 64 KiB clusters: 128 MiB of L2; QEMU's default is 32 MiB of 4 KiB entries; the
    # auto cache-size (160 MiB) gives L2 what covers the image and the rest to refcounts.
    assert (geometry.cluster_size, geometry.l2_needed, geometry.default_l2, geometry.default_entry,
            geometry.auto_l2) == (65536, 128 * MIB, 32 * MIB, 4096, 128 * MIB)

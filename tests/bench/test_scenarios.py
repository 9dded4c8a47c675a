"""The parts of --live-change, --idle-memory and --workload that need no QEMU: the idle
figures, the daemons' commands, and what is refused before anything is measured."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from qdisk.bench import WORKLOADS, ScenarioReport, Summary, WorkloadResult, check_workloads
from qdisk.bench.daemon import daemon_argv, emulator_argv
from qdisk.bench.idle import IdleMemoryReport, figures, idle_seconds, released_after, with_ratios
from qdisk.bench.livechange import LiveChangeReport, LiveRound, analyse, timeline
from qdisk.cli.bench import _print_scenarios
from qdisk.errors import InvalidInputError

from cli_helpers import RunQdisk

MIB = 1 << 20


def test_memory_counts_as_given_back_within_ten_percent_of_the_baseline() -> None:
    samples = [(0.25, 160 * MIB), (2.5, 60 * MIB), (2.75, 35 * MIB), (3.0, 33 * MIB)]
    assert released_after(samples, 32 * MIB) == 2.75  # 35 MiB <= 35.2 MiB
    assert released_after(samples, 20 * MIB) is None


def test_idle_figures_compare_the_last_sample_with_the_baseline_and_the_resumed_second() -> None:
    result = figures(32 * MIB, 160 * MIB, [(0.25, 160 * MIB), (5.0, 32 * MIB + MIB)],
                     {"cold": 20_000.4, "reading": 80_000, "resumed": 20_000})
    assert result == {"rss-bytes": {"baseline": 32 * MIB, "reading": 160 * MIB, "idle": 33 * MIB},
                      "released-after-s": 5.0, "iops": {"cold": 20_000, "reading": 80_000, "resumed": 20_000}}
    ratios = with_ratios(result)
    assert ratios["idle/baseline"] == round(33 / 32, 3)
    assert (ratios["resumed/reading"], ratios["resumed/cold"]) == (0.25, 1.0)


def test_the_idle_time_covers_two_clean_intervals() -> None:
    # An entry unused for a whole interval is freed at the next tick: within two intervals.
    assert idle_seconds(2) == 5


def test_a_workload_that_writes_is_refused_on_a_users_image() -> None:
    assert [w.name for w in check_workloads(["hotset", "randrw", "hotset"], None)] == ["hotset", "randrw"]
    assert [w.name for w in check_workloads(["seqread"], Path("/img"))] == ["seqread"]
    with pytest.raises(InvalidInputError, match=r"^/img: workload randrw writes: it runs on scratch images only"):
        check_workloads(["seqread", "randrw"], Path("/img"))
    with pytest.raises(InvalidInputError, match=r"^unknown workload 'mixed' \(known: randread, randrw, seqread"):
        check_workloads(["mixed"], None)


def test_the_daemon_can_export_writable_and_listen_for_qmp() -> None:
    node = {"driver": "file", "node-name": "file0", "filename": "/i.img"}
    argv = daemon_argv("qsd", [], [node], "file0", Path("/w/nbd.sock"), Path("/w/qsd.pid"),
                       writable=True, qmp_socket=Path("/w,x/qmp.sock"))
    export = json.loads(argv[argv.index("--export") + 1])
    assert export["writable"] is True and export["node-name"] == "file0"
    # QEMU's option syntax: the comma in the path is doubled.
    assert argv[argv.index("--chardev") + 1] == "socket,id=qmp0,path=/w,,x/qmp.sock,server=on,wait=off"
    assert argv[argv.index("--monitor") + 1] == "chardev=qmp0"
    plain = daemon_argv("qsd", [], [node], "file0", Path("/w/nbd.sock"), Path("/w/qsd.pid"))
    assert "--chardev" not in plain and json.loads(plain[plain.index("--export") + 1])["writable"] is False


def test_the_emulator_is_a_vm_without_guest_with_the_same_nodes() -> None:
    group = {"qom-type": "throttle-group", "id": "t0", "limits": {}}
    node = {"driver": "file", "node-name": "file0", "filename": "/i.img"}
    argv = emulator_argv("qemu-system-x86_64", [group], [node], Path("/w/qsd.pid"), Path("/w/qmp.sock"))
    assert argv[:6] == ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none"]
    assert json.loads(argv[argv.index("-object") + 1]) == group
    assert json.loads(argv[argv.index("-blockdev") + 1]) == node
    assert argv[argv.index("-mon") + 1] == "chardev=qmp0,mode=control"
    assert "-S" not in argv  # a stopped VM stops the clock the clean timer runs on


CheckNothingLeft = Callable[[], None]


@pytest.mark.parametrize(("args", "message"), [
    (["--sweep", "--live-change"], "qdisk: --sweep cannot be combined with --live-change, --idle-memory or --workload\n"),
    (["--workload", "hotset", "--plot", "x.png"],
     "qdisk: x.png: --plot draws the sweep or the live change (--live-change)\n"),
    (["--live-change", "--plot", "x.pdf"], "qdisk: x.pdf: the plot is written as .png or .svg\n"),
])
def test_contradicting_options_are_refused_before_measuring(
        run_qdisk: RunQdisk, assert_nothing_left: CheckNothingLeft, args: list[str], message: str) -> None:
    result = run_qdisk("bench", "--size", "64M", *args)
    assert (result.exit_code, result.stderr) == (2, message)
    assert_nothing_left()


def test_a_writing_workload_on_a_users_image_is_refused_before_measuring(
        run_qdisk: RunQdisk, tmp_path: Path, assert_nothing_left: CheckNothingLeft) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    result = run_qdisk("bench", str(image), "--workload", "randrw")
    assert result.exit_code == 2
    assert result.stderr == (f"qdisk: {image}: workload randrw writes: it runs on scratch images only "
                             "(leave out IMAGE)\n")
    assert image.read_bytes() == b"\0" * 65536
    assert_nothing_left()


def test_an_unknown_workload_is_a_usage_error(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("bench", "--workload", "mixed")
    assert result.exit_code == 2 and "'mixed' is not one of 'randread', 'randrw', 'seqread', 'hotset'" in result.stderr


def test_the_text_report_shows_every_part(live_round: LiveRound, capsys: pytest.CaptureFixture[str]) -> None:
    live = LiveChangeReport(1, [analyse(live_round)], timeline(live_round))
    idle = IdleMemoryReport(2, {"qcow2-auto-clean": [figures(32 * MIB, 160 * MIB, [(2.5, 33 * MIB)],
                                                             {"cold": 2e4, "reading": 8e4, "resumed": 2e4})],
                                "qcow2-auto": [figures(32 * MIB, 160 * MIB, [(5.0, 160 * MIB)],
                                                       {"cold": 2e4, "reading": 8e4, "resumed": 8e4})]})
    summary = Summary(iops=1000, lat_p50_us=100, lat_p99_us=900, rss_bytes=9 * MIB, rounds=1)
    seqread = WorkloadResult(WORKLOADS["seqread"], {"raw": summary}, {})
    machine = {"cores": 2, "memory-bytes": None, "cpu": "cpu", "kernel": "6", "fio": "fio-3.33"}
    _print_scenarios(ScenarioReport(live, idle, {"seqread": seqread}, machine, "7.2.22"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "live change (medians of 1 rounds, phases of 1 s):"
    assert lines[5].split() == ["fresh-auto", "504", "2707.9"]
    assert lines[6] == "grown/fresh-auto: 1.00"
    assert lines[7].startswith("reopen to qcow2-auto: stall 50 ms, QMP 2.3 ms, p99 ")
    assert lines[9] == "longest gap away from the reopens: 6 ms"
    assert lines[12].split() == ["qcow2-auto-clean", "32.0", "160.0", "33.0", "2.50", "20,000", "80,000", "20,000"]
    assert lines[13].split() == ["qcow2-auto", "32.0", "160.0", "160.0", "-", "20,000", "80,000", "80,000"]
    assert lines[14] == "workload seqread: 1 MiB sequential reads"
    assert lines[16].split() == ["raw", "1,000", "1,000.0", "100.0", "900.0", "9.0"]  # MiB/s of 1 MiB reads
    assert lines[-1].startswith("machine: 2 cores, memory unknown, cpu")

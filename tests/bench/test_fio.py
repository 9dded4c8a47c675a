"""Parsing fio's JSON report, and the fio command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdisk.bench.fio import WORKLOADS, fio_argv, latency_log_path, parse_fio_json
from qdisk.errors import ToolError


def test_real_report_gives_read_iops_and_total_latency_percentiles(fio_report: str) -> None:
    result = parse_fio_json(fio_report)
    assert result.iops == pytest.approx(154427.572428)
    # lat_ns (submission + completion) percentiles, ns -> µs.
    assert result.lat_p50_us == pytest.approx(98.816)
    assert result.lat_p99_us == pytest.approx(244.736)


def _edited(report: str, edit: str) -> str:
    data = json.loads(report)
    job = data["jobs"][0]
    if edit == "error":
        job["error"] = 5
    elif edit == "no-reads":
        job["read"]["iops"] = 0
    elif edit == "clat-only":
        del job["read"]["lat_ns"]["percentile"]
    elif edit == "two-jobs":
        data["jobs"].append(job)
    elif edit == "no-jobs":
        del data["jobs"]
    return json.dumps(data)


@pytest.mark.parametrize(("edit", "message"), [
    ("error", "fio: job failed with error 5"),
    ("no-reads", "fio: completed no reads"),
    ("clat-only", "fio: report lacks the read results (KeyError: 'percentile')"),
    ("two-jobs", "fio: report lacks the read results (ValueError: expected exactly one job)"),
    ("no-jobs", "fio: report lacks the read results (KeyError: 'jobs')"),
])
def test_bad_reports_are_tool_errors_naming_the_problem(fio_report: str, edit: str, message: str) -> None:
    with pytest.raises(ToolError) as caught:
        parse_fio_json(_edited(fio_report, edit))
    assert str(caught.value) == message


def test_text_that_is_not_json_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match=r"^fio: report is not JSON: "):
        parse_fio_json("fio: connected to NBD server\n{")


def test_fio_reads_the_export_at_random_and_writes_its_report_to_a_file() -> None:
    argv = fio_argv("fio", Path("/tmp/x/nbd.sock"), "disk", 8, Path("/tmp/x/r.json"))
    assert argv[0] == "fio"
    assert {"--ioengine=nbd", "--uri=nbd+unix:///disk?socket=/tmp/x/nbd.sock", "--rw=randread",
            "--bs=4k", "--iodepth=16", "--runtime=8", "--time_based", "--lat_percentiles=1",
            "--output-format=json", "--output=/tmp/x/r.json"} <= set(argv)
    assert not any(arg.startswith(("--rw=rw", "--rw=write", "--rw=randwrite")) for arg in argv)


def test_a_mixed_load_is_read_from_its_mixed_section(randrw_report: str) -> None:
    result = parse_fio_json(randrw_report, section="mixed")
    assert result.iops == pytest.approx(45474.525475)
    assert (result.lat_p50_us, result.lat_p99_us) == (pytest.approx(292.864), pytest.approx(1581.056))
    with pytest.raises(ToolError, match=r"^fio: report lacks the read results \(KeyError: 'read'\)$"):
        parse_fio_json(randrw_report)


def test_a_mixed_load_without_io_says_so(randrw_report: str) -> None:
    data = json.loads(randrw_report)
    data["jobs"][0]["mixed"]["iops"] = 0
    with pytest.raises(ToolError, match="^fio: completed no I/O$"):
        parse_fio_json(json.dumps(data), section="mixed")


@pytest.mark.parametrize(("name", "expected", "section"), [
    ("randread", ["--name=randread", "--rw=randread", "--bs=4k"], "read"),
    ("randrw", ["--name=randrw", "--rw=randrw", "--bs=4k", "--rwmixread=70", "--randrepeat=1",
                "--unified_rw_reporting=mixed"],
     "mixed"),
    ("seqread", ["--name=seqread", "--rw=read", "--bs=1024k"], "read"),
    ("hotset", ["--name=hotset", "--rw=randread", "--bs=4k", "--random_distribution=zipf:1.2"], "read"),
])
def test_each_workload_is_fios_load_and_its_report_section(name: str, expected: list[str], section: str) -> None:
    workload = WORKLOADS[name]
    assert workload.argv() == expected
    assert workload.section == section
    assert workload.writes == (name == "randrw")
    argv = fio_argv("fio", Path("/tmp/x/nbd.sock"), "disk", 2, Path("/tmp/x/r.json"), workload)
    assert argv[1:1 + len(expected)] == expected and "--iodepth=16" in argv


def test_a_latency_log_logs_total_latency_only_with_wall_clock_stamps() -> None:
    argv = fio_argv("fio", Path("/tmp/x/nbd.sock"), "disk", 3, Path("/tmp/x/r.json"), latency_log=Path("/tmp/x/live"))
    assert {"--write_lat_log=/tmp/x/live", "--log_unix_epoch=1", "--disable_clat=1", "--disable_slat=1"} <= set(argv)
    assert latency_log_path(Path("/tmp/x/live")) == Path("/tmp/x/live_lat.1.log")
    assert not any(arg.startswith("--write_lat_log") for arg in fio_argv(
        "fio", Path("/s"), "disk", 3, Path("/r.json")))

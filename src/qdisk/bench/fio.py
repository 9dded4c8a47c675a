"""Driving fio's nbd engine and reading its JSON report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdisk import tools
from qdisk.errors import ToolError

# The load of every measurement: 4 KiB random reads, 16 in flight (benchmarking.md).
BLOCK_SIZE = "4k"
IODEPTH = 16


@dataclass(frozen=True)
class FioResult:
    """One fio run: read IOPS and total (submission + completion) latency percentiles."""

    iops: float
    lat_p50_us: float
    lat_p99_us: float


def fio_argv(fio: str, socket: Path, export: str, runtime: int, output: Path) -> list[str]:
    """The fio command that reads the NBD export ``export`` served on ``socket``."""
    return [
        fio, "--name=randread", "--ioengine=nbd",
        f"--uri=nbd+unix:///{export}?socket={socket}",
        "--rw=randread", f"--bs={BLOCK_SIZE}", f"--iodepth={IODEPTH}",
        f"--runtime={runtime}", "--time_based",
        "--lat_percentiles=1", "--clat_percentiles=0", "--percentile_list=50:99",
        # fio prints "connected to NBD server" on stdout: the report goes to a file.
        "--output-format=json", f"--output={output}",
    ]


def run_fio(fio: str, socket: Path, export: str, runtime: int, output: Path) -> FioResult:
    """Run fio against the export for ``runtime`` seconds and return what it measured."""
    tools.run(fio_argv(fio, socket, export, runtime, output), timeout=runtime + 60)
    try:
        text = output.read_text()
    except OSError as error:
        raise ToolError(fio, f"wrote no report to {output}: {error.strerror}") from None
    return parse_fio_json(text, fio)


def parse_fio_json(text: str, fio: str = "fio") -> FioResult:
    """The read results of the single job in fio's ``--output-format=json`` report."""
    try:
        report = json.loads(text)
        job = _single_job(report)
        if job.get("error"):
            raise ToolError(fio, f"job failed with error {job['error']}")
        read = job["read"]
        iops = float(read["iops"])
        percentiles = read["lat_ns"]["percentile"]
        p50_ns, p99_ns = float(percentiles["50.000000"]), float(percentiles["99.000000"])
    except json.JSONDecodeError as error:
        raise ToolError(fio, f"report is not JSON: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ToolError(fio, f"report lacks the read results ({type(error).__name__}: {error})") from None
    if iops <= 0:
        raise ToolError(fio, "completed no reads")
    return FioResult(iops=iops, lat_p50_us=p50_ns / 1000, lat_p99_us=p99_ns / 1000)


def _single_job(report: Any) -> dict[str, Any]:
    jobs = report["jobs"]
    if not isinstance(jobs, list) or len(jobs) != 1 or not isinstance(jobs[0], dict):
        raise ValueError("expected exactly one job")
    return jobs[0]


def fio_version(fio: str) -> str:
    """``fio-3.33``."""
    return tools.run([fio, "--version"], timeout=30).stdout.strip()

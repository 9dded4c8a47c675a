"""Driving fio's nbd engine: the loads, its JSON report and its per-I/O latency log."""

from __future__ import annotations

import json
import subprocess
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from qdisk.errors import ToolError
from qdisk.system import tools

# The load of every measurement: 4 KiB random reads, 16 in flight (benchmarking.md).
BLOCK_BYTES = 4096
IODEPTH = 16
# How long fio may overrun its runtime (start, connecting, writing its logs).
GRACE_SECONDS = 60


@dataclass(frozen=True)
class Workload:
    """One kind of load: fio's ``rw`` and block size, and its further options. A load
    that writes is reported as one (``unified_rw_reporting=mixed``): reads and writes
    together."""

    name: str
    rw: str
    block_bytes: int
    options: tuple[str, ...] = ()
    writes: bool = False
    summary: str = ""

    @property
    def section(self) -> str:
        """Where fio's JSON report puts the job's results."""
        return "mixed" if self.writes else "read"

    def argv(self) -> list[str]:
        mixed = ["--unified_rw_reporting=mixed"] if self.writes else []
        return [f"--name={self.name}", f"--rw={self.rw}", f"--bs={self.block_bytes // 1024}k",
                *self.options, *mixed]


RANDREAD = Workload("randread", "randread", BLOCK_BYTES, summary="4 KiB random reads, uniform over the disk")
WORKLOADS = {workload.name: workload for workload in (
    RANDREAD,
    # fio's default, made explicit: every run writes the same offsets (see scenarios).
    Workload("randrw", "randrw", BLOCK_BYTES, ("--rwmixread=70", "--randrepeat=1"), writes=True,
             summary="4 KiB random reads and writes, 70/30, uniform over the disk"),
    Workload("seqread", "read", 1 << 20, summary="1 MiB sequential reads"),
    # fio scatters the Zipf ranks over the whole disk (it hashes them), so the hot blocks
    # are spread out as a database's are, not packed in one region.
    Workload("hotset", "randread", BLOCK_BYTES, ("--random_distribution=zipf:1.2",),
             summary="4 KiB random reads, Zipf 1.2 over the disk"),
)}


@dataclass(frozen=True)
class FioResult:
    """One fio run: IOPS and total (submission + completion) latency percentiles."""

    iops: float
    lat_p50_us: float
    lat_p99_us: float


def fio_argv(fio: str, socket: Path, export: str, runtime: int, output: Path,
             workload: Workload = RANDREAD, latency_log: Path | None = None) -> list[str]:
    """The fio command that loads the NBD export ``export`` served on ``socket``.

    With ``latency_log``, fio also logs every I/O's completion time (Unix epoch, ms) and
    total latency to :func:`latency_log_path` of it.
    """
    argv = [
        fio, *workload.argv(), "--ioengine=nbd",
        f"--uri=nbd+unix:///{export}?socket={socket}",
        f"--iodepth={IODEPTH}", f"--runtime={runtime}", "--time_based",
        "--lat_percentiles=1", "--clat_percentiles=0", "--percentile_list=50:99",
        # fio prints "connected to NBD server" on stdout: the report goes to a file.
        "--output-format=json", f"--output={output}",
    ]
    if latency_log is not None:
        # Wall-clock stamps line the log up with what happened meanwhile; the completion
        # and submission latency logs would only triple the log.
        argv += [f"--write_lat_log={latency_log}", "--log_unix_epoch=1", "--disable_clat=1",
                 "--disable_slat=1"]
    return argv


def latency_log_path(prefix: Path) -> Path:
    """The file fio writes the total-latency log of its one job to."""
    return prefix.with_name(f"{prefix.name}_lat.1.log")


def run_fio(fio: str, socket: Path, export: str, runtime: int, output: Path,
            workload: Workload = RANDREAD, latency_log: Path | None = None) -> FioResult:
    """Run fio against the export for ``runtime`` seconds and return what it measured."""
    tools.run(fio_argv(fio, socket, export, runtime, output, workload, latency_log),
              timeout=runtime + GRACE_SECONDS)
    return read_report(fio, output, workload)


def read_report(fio: str, output: Path, workload: Workload = RANDREAD) -> FioResult:
    try:
        text = output.read_text()
    except OSError as error:
        raise ToolError(fio, f"wrote no report to {output}: {error.strerror}") from None
    return parse_fio_json(text, fio, workload.section)


class FioProcess:
    """fio running in the background while the caller changes what it reads; a context
    manager that kills and reaps it unless it finished."""

    def __init__(self, argv: list[str], stderr_path: Path, timeout: float) -> None:
        self._argv = argv
        self._stderr_path = stderr_path
        self._timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FioProcess:
        try:
            with self._stderr_path.open("wb") as stderr:
                self._process = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=stderr)
        except FileNotFoundError:
            raise ToolError(self._argv[0], "program not found (install it, or set its QDISK_* path)") from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def wait(self) -> None:
        """Wait for fio to finish; raise ToolError if it failed or overran."""
        assert self._process is not None
        fio = self._argv[0]
        try:
            returncode = self._process.wait(self._timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(fio, f"did not finish within {self._timeout:g} s") from None
        if returncode != 0:
            stderr = self._stderr_path.read_text(errors="replace")
            raise ToolError(fio, tools.last_message(stderr) or f"exited with code {returncode}",
                            returncode=returncode, stderr=stderr)


def parse_fio_json(text: str, fio: str = "fio", section: str = "read") -> FioResult:
    """The results of the single job in fio's ``--output-format=json`` report: its reads,
    or its ``mixed`` section for a load reported as one."""
    try:
        report = json.loads(text)
        job = _single_job(report)
        if job.get("error"):
            raise ToolError(fio, f"job failed with error {job['error']}")
        results = job[section]
        iops = float(results["iops"])
        percentiles = results["lat_ns"]["percentile"]
        p50_ns, p99_ns = float(percentiles["50.000000"]), float(percentiles["99.000000"])
    except json.JSONDecodeError as error:
        raise ToolError(fio, f"report is not JSON: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ToolError(fio, f"report lacks the {section} results ({type(error).__name__}: {error})") from None
    if iops <= 0:
        raise ToolError(fio, "completed no reads" if section == "read" else "completed no I/O")
    return FioResult(iops=iops, lat_p50_us=p50_ns / 1000, lat_p99_us=p99_ns / 1000)


def _single_job(report: Any) -> dict[str, Any]:
    jobs = report["jobs"]
    if not isinstance(jobs, list) or len(jobs) != 1 or not isinstance(jobs[0], dict):
        raise ValueError("expected exactly one job")
    return jobs[0]


@dataclass(frozen=True)
class Completions:
    """Every I/O of a run from fio's latency log, in completion order: the completion
    time (Unix epoch, ms) and total latency (ns)."""

    times_ms: array[int]
    latencies_ns: array[int]


def parse_latency_log(lines: Iterable[str], fio: str = "fio", name: str = "latency log") -> Completions:
    """fio's ``--write_lat_log`` lines (``time, latency, direction, block size, offset[, ...]``)."""
    times, latencies = array("q"), array("q")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split(",", 2)
        try:
            time_ms, latency_ns = int(fields[0]), int(fields[1])
        except (IndexError, ValueError):
            raise ToolError(fio, f"{name} line {number}: not 'time, latency, ...': {line.strip()[:80]!r}") from None
        if time_ms < 0 or latency_ns < 0:
            raise ToolError(fio, f"{name} line {number}: a negative time or latency: {line.strip()[:80]!r}")
        times.append(time_ms)
        latencies.append(latency_ns)
    if not times:
        raise ToolError(fio, f"{name} holds no completions")
    # fio logs in completion order, which its clock may not keep to the millisecond.
    if any(later < earlier for earlier, later in zip(times, times[1:])):
        order = sorted(range(len(times)), key=times.__getitem__)
        times, latencies = array("q", (times[i] for i in order)), array("q", (latencies[i] for i in order))
    return Completions(times, latencies)


def read_latency_log(fio: str, path: Path) -> Completions:
    try:
        with path.open() as lines:
            return parse_latency_log(lines, fio, path.name)
    except OSError as error:
        raise ToolError(fio, f"wrote no latency log to {path}: {error.strerror}") from None


def fio_version(fio: str) -> str:
    """``fio-3.33``."""
    return tools.run([fio, "--version"], timeout=30).stdout.strip()

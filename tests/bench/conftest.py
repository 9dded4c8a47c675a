"""Fixtures of the bench tests: a scratch parent directory, and finding leftover processes."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qdisk.bench.fio import read_latency_log
from qdisk.bench.livechange import LiveRound, Reopen

DATA = Path(__file__).parent / "data"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes whose arguments contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if any(text.encode() in arg for arg in args):
            found.append(" ".join(arg.decode(errors="replace") for arg in args))
    return found


@pytest.fixture
def scratch_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The directory that bench's temporary directories go into (also through the CLI)."""
    parent = tmp_path / "scratch"
    parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    yield parent


@pytest.fixture
def fio_report() -> str:
    """A real report of fio 3.33 (nbd engine, randread 4k, iodepth 16, 1 s) against qemu-storage-daemon."""
    return (DATA / "fio-randread.json").read_text()


@pytest.fixture
def randrw_report() -> str:
    """A real report of fio 3.33 (``--workload randrw``: 70/30, ``unified_rw_reporting=mixed``,
    1 s) against qemu-storage-daemon serving a 1 GiB qcow2-auto image, writable."""
    return (DATA / "fio-randrw.json").read_text()


@pytest.fixture
def live_round() -> LiveRound:
    """A real live change, recorded as ``--live-change`` records it but with 1 s phases and
    fio held to 500 IOPS (``--rate_iops=500``) to keep the logs small: fio's latency logs
    of the live run (qcow2-default of a 1 TiB image, reopened to qcow2-auto and back) and
    of the fresh qcow2-auto start, and the times of the two reopens. The resident memory
    is made up (1, 2, 3)."""
    reopens = [Reopen(r["to"], r["start-ms"], r["end-ms"])
               for r in json.loads((DATA / "live-change-reopens.json").read_text())]
    grow, shrink = reopens
    return LiveRound(live=read_latency_log("fio", DATA / "live-change_lat.1.log"), reopens=(grow, shrink),
                     rss_bytes={"before": 1, "grown": 2, "restored": 3},
                     fresh=read_latency_log("fio", DATA / "fresh-auto_lat.1.log"))


@pytest.fixture
def assert_nothing_left(scratch_parent: Path) -> Callable[[], None]:
    """Check that no file stays in the scratch parent and no process still refers to it."""

    def check() -> None:
        assert list(scratch_parent.iterdir()) == []
        assert _processes_mentioning(str(scratch_parent)) == []

    return check

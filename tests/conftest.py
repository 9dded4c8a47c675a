"""Fixtures shared by every test area.

Each area (tests/<area>/) keeps its own fixtures in its own conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from qdisk.cli import main

from cli_helpers import CliResult, RunQdisk
from qemu_helpers import kill_and_wait, qemu_img

# CI runs once, on a fresh clone: the same examples every time, no example database in
# the tree, no per-example deadline on a loaded machine. Developers keep exploring.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite golden files from the program's output (review the diff!)")


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden files on purpose."""
    return bool(request.config.getoption("--regen-golden"))


@pytest.fixture
def run_qdisk(capsys: pytest.CaptureFixture[str]) -> RunQdisk:
    """Run ``qdisk ARGS...`` in-process through ``main`` (the one place that picks exit codes)."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty QDISK_HOME for the test."""
    path = tmp_path / "qdisk-home"
    path.mkdir()
    monkeypatch.setenv("QDISK_HOME", str(path))
    yield path


def _kill_vms_of(home: Path) -> None:
    """SIGKILL every QEMU whose pid file is under ``home/run`` and whose command line names
    that home (a pid reused by another process is left alone), and wait until it is gone."""
    for pid_file in (home / "run").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(home).encode() not in cmdline:
            continue
        kill_and_wait(pid)


@pytest.fixture
def vm_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty QDISK_HOME with QEMU under TCG; every QEMU started in it is killed at the
    end, also when the test fails."""
    monkeypatch.setenv("QDISK_ACCEL", "tcg")
    for variable in ("QDISK_QEMU_SYSTEM", "QDISK_QEMU_IMG"):
        monkeypatch.delenv(variable, raising=False)
    try:
        yield home
    finally:
        _kill_vms_of(home)


@pytest.fixture
def config_file(vm_home: Path) -> Path:
    """VM 100's config file (not created)."""
    return vm_home / "qemu-server" / "100.conf"


@pytest.fixture
def make_qcow2(tmp_path: Path) -> Callable[..., Path]:
    """Create a real qcow2 image: ``make_qcow2("a.qcow2", "1G", "-o", "cluster_size=4096")``."""

    def make(name: str, size: str, *options: str) -> Path:
        path = tmp_path / name
        qemu_img("create", "-f", "qcow2", *options, str(path), size)
        return path

    return make

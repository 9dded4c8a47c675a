"""Fixtures of the bench tests: a scratch parent directory, and finding leftover processes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
def assert_nothing_left(scratch_parent: Path) -> Callable[[], None]:
    """Check that no file stays in the scratch parent and no process still refers to it."""

    def check() -> None:
        assert list(scratch_parent.iterdir()) == []
        assert _processes_mentioning(str(scratch_parent)) == []

    return check

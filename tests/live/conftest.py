"""Fixtures of the live-change area (helpers in live_helpers.py): every QEMU started is
killed and waited for at teardown, also when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from live_helpers import LiveHome, make_live_home
from qemu_helpers import kill_and_wait


@pytest.fixture(scope="module")
def started_pids() -> Iterator[list[int]]:
    """Every QEMU a module starts; all are killed at the module's end, whatever happened."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            kill_and_wait(pid)


@pytest.fixture
def live_home(tmp_path: Path) -> LiveHome:
    return make_live_home(tmp_path)

"""Fixtures of the Proxmox VE host area (helpers in pve_helpers.py): a simulated host tree
per test, ``QDISK_PVE_ROOT``/``QDISK_PVE_NODE`` pointing at it, every QEMU started killed
at the end, and Proxmox VE's own files checked byte-identical after every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pve_helpers import PveTree, hosted, make_tree


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PveTree]:
    yield from hosted(make_tree(tmp_path / "root"), monkeypatch)


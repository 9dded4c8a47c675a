"""Fixtures of the Proxmox VE host area (helpers in pve_helpers.py): a simulated host tree
per test, ``QDISK_PVE_ROOT``/``QDISK_PVE_NODE`` pointing at it, every QEMU started killed
at the end, and Proxmox VE's own files checked byte-identical after every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pve_helpers import THIS_NODE, PveTree, make_tree


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PveTree]:
    host = make_tree(tmp_path / "root")
    monkeypatch.setenv("QDISK_PVE_ROOT", str(host.root))
    monkeypatch.setenv("QDISK_PVE_NODE", THIS_NODE)
    for variable in ("QDISK_QEMU_SYSTEM", "QDISK_QEMU_IMG"):
        monkeypatch.delenv(variable, raising=False)
    before = host.proxmox_files()
    try:
        yield host
    finally:
        host.kill_all()
    assert host.proxmox_files() == before, "a Proxmox VE file changed"

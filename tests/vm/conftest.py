"""Fixtures of the VM area (``vm_home``, a home under TCG, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def config_file(vm_home: Path) -> Path:
    """VM 100's config file (not created)."""
    return vm_home / "qemu-server" / "100.conf"

"""Fixtures of the storage area: a storage.cfg with a section of every type, and a qcow2
on a real loop device."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdisk import storage

from qemu_helpers import qemu_img


@pytest.fixture
def every_type(tmp_path: Path) -> storage.StorageConfig:
    """storage.cfg with one section of every type; ``tmp_path`` stands for /etc/pve."""
    return storage.parse_storage_cfg((Path(__file__).parent / "data" / "every-type.cfg").read_text(),
                                     config_dir=tmp_path)


@pytest.fixture
def loop_qcow2(tmp_path: Path) -> Iterator[Path]:
    """A 1 GiB qcow2 written by qemu-img on a loop device (``/dev/loopN``), detached at the
    end even when the test fails. Fails (never skips) when losetup is missing or refuses."""
    losetup = shutil.which("losetup")
    assert losetup is not None, "losetup (util-linux) is needed for the block device tests"
    backing = tmp_path / "loop-backing.img"
    with backing.open("wb") as file:
        file.truncate(16 * 1024 * 1024)
    attached = subprocess.run([losetup, "-f", "--show", str(backing)], capture_output=True, text=True)
    assert attached.returncode == 0, f"losetup -f --show: {attached.stderr.strip()}"
    device = Path(attached.stdout.strip())
    try:
        qemu_img("create", "-q", "-f", "qcow2", str(device), "1G")
        yield device
    finally:
        subprocess.run([losetup, "-d", str(device)], capture_output=True, check=False)

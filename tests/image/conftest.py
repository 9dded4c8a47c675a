"""Real images made once per module by qemu-img (and qemu-io for allocated data)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from qdisk.image.qcow2 import INCOMPAT_CORRUPT, INCOMPAT_DIRTY

from image_kinds import IMAGE_KINDS, qemu_img, qemu_io_write


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of image above, a raw file, and backing chains (relative and absolute)."""
    directory = tmp_path_factory.mktemp("images")
    for name, (size, options) in IMAGE_KINDS.items():
        options = tuple(option.format(directory=directory) for option in options)
        qemu_img("create", "-q", "-f", "qcow2", *options, str(directory / f"{name}.qcow2"), size)
    qemu_io_write(directory / "c64k.qcow2", 0, 600 * 2**20, 1536 * 2**20)
    # No qemu-img option makes these: the dirty and corrupt bits set as a crash would.
    flagged = bytearray((directory / "c64k-rc4-lazy.qcow2").read_bytes())
    struct.pack_into(">Q", flagged, 72, INCOMPAT_DIRTY | INCOMPAT_CORRUPT)
    (directory / "dirty-corrupt.qcow2").write_bytes(flagged)
    qemu_img("create", "-q", "-f", "raw", str(directory / "disk.raw"), "3M")
    (directory / "sub").mkdir()
    qemu_img("create", "-q", "-f", "qcow2", "-b", "../c64k.qcow2", "-F", "qcow2",
             str(directory / "sub" / "relative.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(directory / "sub" / "relative.qcow2"),
             "-F", "qcow2", str(directory / "absolute.qcow2"), "4G")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "disk.raw", "-F", "raw",
             str(directory / "on-raw.qcow2"))
    qemu_img("create", "-q", "-f", "vmdk", str(directory / "other.vmdk"), "1M")
    return directory


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A new 1 MiB qcow2 image (version 3, 64 KiB clusters) as bytes, to craft headers from."""
    path = tmp_path_factory.mktemp("template") / "template.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    return path.read_bytes()

"""Helpers of the image tests: running qemu-img/qemu-io, the kinds of images made."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from qemu_helpers import qemu_img


def qemu_img_info(path: Path | str, *extra: str) -> object:
    """``qemu-img info --output=json`` of an image, parsed."""
    return json.loads(qemu_img("info", "--output=json", "-U", *extra, str(path)))


def qemu_io_write(path: Path, *offsets: int) -> None:
    """Write one 512-byte sector at each offset (allocating the L2 tables that map them)."""
    commands = [arg for offset in offsets for arg in ("-c", f"write {offset} 512")]
    result = subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# name -> (size, qemu-img create options; {directory}: the images' directory, since
# qemu-img creates a relative data file in its working directory)
IMAGE_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "c512": ("10M", ("-o", "cluster_size=512")),
    "c4k-rc1": ("100M", ("-o", "cluster_size=4096,refcount_bits=1")),
    "c64k-rc2": ("1G", ("-o", "refcount_bits=2")),
    "c64k-rc4-lazy": ("1G", ("-o", "refcount_bits=4,lazy_refcounts=on")),
    "c64k-rc8": ("1T", ("-o", "refcount_bits=8")),
    "c64k": ("2G", ()),
    "c256k-rc32": ("5G", ("-o", "cluster_size=256k,refcount_bits=32")),
    "c2m-rc64": ("20G", ("-o", "cluster_size=2M,refcount_bits=64")),
    "c16k-extl2": ("1G", ("-o", "cluster_size=16k,extended_l2=on")),
    "c2m-extl2": ("100G", ("-o", "cluster_size=2M,extended_l2=on")),
    "v2": ("1000", ("-o", "compat=0.10")),
    "v2-c2m": ("3G", ("-o", "compat=0.10,cluster_size=2M")),
    "zstd": ("1G", ("-o", "compression_type=zstd")),
    "datafile": ("1G", ("-o", "data_file={directory}/datafile.raw")),
    "datafile-raw": ("1G", ("-o", "data_file={directory}/datafile2.raw,data_file_raw=on")),
}

"""Helpers of the image tests: running qemu-img/qemu-io, the kinds of images made."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu_helpers import qemu_img


def qemu_img_info(path: Path | str, *extra: str) -> object:
    """``qemu-img info --output=json`` of an image, parsed."""
    return json.loads(qemu_img("info", "--output=json", "-U", *extra, str(path)))


def qemu_img_verdict(path: Path, *extra: str) -> Any:
    """``qemu-img info --output=json`` of an image, parsed, or its error message (a str)
    when qemu-img refuses the image."""
    # errors="replace": QEMU quotes a damaged header's bytes as they are.
    result = subprocess.run(["qemu-img", "info", "--output=json", "-U", *extra, str(path)],
                            capture_output=True, text=True, errors="replace")
    return result.stderr.strip() if result.returncode else json.loads(result.stdout)


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


# --- crafted headers ----------------------------------------------------------------------

Patch = Callable[[bytearray], None]


def put(offset: int, fmt: str, value: int) -> Patch:
    """A patch that packs ``value`` (struct format ``fmt``) at ``offset`` of a header."""
    def patch(header: bytearray) -> None:
        struct.pack_into(fmt, header, offset, value)
    return patch


def extensions(*items: tuple[int, bytes]) -> Patch:
    """A patch that writes these header extensions (type, data) after the version 3 header
    (at header_length), then the end marker: what was there before is replaced."""
    def patch(header: bytearray) -> None:
        offset = struct.unpack_from(">I", header, 100)[0]
        for ext_type, data in items:
            padded = data.ljust(-(-len(data) // 8) * 8, b"\0")
            header[offset:offset + 8 + len(padded)] = struct.pack(">II", ext_type, len(data)) + padded
            offset += 8 + len(padded)
        header[offset:offset + 8] = bytes(8)
    return patch


def crafted(path: Path, template: bytes, *patches: Patch) -> Path:
    """Write ``template`` with the patches applied to ``path``."""
    data = bytearray(template)
    for patch in patches:
        patch(data)
    path.write_bytes(data)
    return path


def deep_chain(directory: Path, depth: int) -> list[Path]:
    """``l0000.qcow2`` (a real 1 MiB image) and ``depth`` overlays, each backed by the one
    before (``-F qcow2``): one real overlay from qemu-img, copied with the backing name
    changed (qemu-img takes about 10 ms per image, this about 30 us). Top last."""
    paths = [directory / f"l{index:04}.qcow2" for index in range(depth + 1)]
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(paths[0]), "1M")
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-o", "cluster_size=512", "-b", paths[0].name,
             "-F", "qcow2", str(paths[-1]), "1M")
    template = paths[-1].read_bytes()
    name_at = template.index(paths[0].name.encode())
    for below, path in zip(paths, paths[1:]):
        # Every name has the same length: the header's backing_file_size stays right.
        data = bytearray(template)
        data[name_at:name_at + len(below.name)] = below.name.encode()
        path.write_bytes(data)
    return paths

"""Crafted headers QEMU has opinions on: the reader accepts what the installed `qemu-img
info` (7.2 or 10.0) accepts and shows what it shows, and refuses what it refuses. Each
case also records what qemu-img does, so a QEMU that changes its mind fails here first."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdisk.cli.image import image_json
from qdisk.image.file import ImageError
from qdisk.image.info import read_image
from qdisk.image.qcow2 import (
    AUTOCLEAR_DATA_FILE_RAW,
    EXT_DATA_FILE,
    INCOMPAT_COMPRESSION,
    INCOMPAT_DATA_FILE,
)
from qdisk.settings import Tools

from image_kinds import Patch, crafted, extensions, put, qemu_img_verdict

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

SIZE, INCOMPATIBLE, AUTOCLEAR, HEADER_LENGTH, COMPRESSION_TYPE = 24, 72, 88, 100, 104


def size(value: int) -> Patch:
    return put(SIZE, ">Q", value)


def incompatible(bits: int) -> Patch:
    return put(INCOMPATIBLE, ">Q", bits)


def compression(value: int) -> Patch:
    return put(COMPRESSION_TYPE, "B", value)


def header_length(value: int) -> Patch:
    return put(HEADER_LENGTH, ">I", value)


def data_file(name: bytes) -> Patch:
    return extensions((EXT_DATA_FILE, name))


RAW_BIT = put(AUTOCLEAR, ">Q", AUTOCLEAR_DATA_FILE_RAW)
# The data file the cases name; it exists (qemu-img info does not open it either way).
DATA_FILE = b"/dev/null"

# name -> (patches of a new 1 MiB image, None if QEMU accepts it, else our reason)
CASES: dict[str, tuple[tuple[Patch, ...], str | None]] = {
    # QEMU counts whole sectors: the size rounds down.
    "size-1000": ((size(1000),), None),
    "size-511": ((size(511),), None),
    "size-0": ((size(0),), None),
    "size-1M-minus-1": ((size(2**20 - 1),), None),
    "size-1M-plus-1": ((size(2**20 + 1),), None),
    # validate_compression_type: known types only, the bit set exactly for non-zlib types.
    "zstd-with-bit": ((compression(1), incompatible(INCOMPAT_COMPRESSION)), None),
    "zstd-without-bit": ((compression(1),), "other than zlib without the compression type "
                                             "feature bit"),
    "type-2-with-bit": ((compression(2), incompatible(INCOMPAT_COMPRESSION)),
                        "unknown compression type 2: QEMU cannot open it"),
    "type-255-without-bit": ((compression(255),), "unknown compression type 255"),
    "zlib-with-bit": ((incompatible(INCOMPAT_COMPRESSION),),
                      r"compression type feature bit set with zlib compression"),
    # A header of 104 bytes has no compression type field: zlib, whatever byte 104 holds.
    "no-field-with-bit": ((header_length(104), incompatible(INCOMPAT_COMPRESSION)),
                          r"compression type feature bit set with zlib compression"),
    "no-field-zstd-byte-with-bit": ((header_length(104), compression(1),
                                     incompatible(INCOMPAT_COMPRESSION)),
                                    r"compression type feature bit set with zlib"),
    "no-field-zstd-byte": ((header_length(104), compression(1)), None),
    "odd-field-zstd-with-bit": ((header_length(105), compression(1),
                                 incompatible(INCOMPAT_COMPRESSION)), None),
    "odd-field-zstd": ((header_length(105), compression(1)), "without the compression type "
                                                             "feature bit"),
    "header-length-106": ((header_length(106),), None),
    # Data files: qemu-img shows data-file when the header names one, data-file-raw when
    # the image uses it (incompatible bit 2); it opens neither without I/O.
    "data-file-named-unused": ((data_file(DATA_FILE),), None),
    "data-file-named-unused-raw": ((data_file(DATA_FILE), RAW_BIT), None),
    "data-file": ((data_file(DATA_FILE), incompatible(INCOMPAT_DATA_FILE)), None),
    "data-file-raw": ((data_file(DATA_FILE), incompatible(INCOMPAT_DATA_FILE), RAW_BIT), None),
    "data-file-missing": ((data_file(b"/nonexistent/data.raw"),
                           incompatible(INCOMPAT_DATA_FILE)), None),
    "data-file-unnamed": ((incompatible(INCOMPAT_DATA_FILE),), None),
    "data-file-empty-name": ((data_file(b""), incompatible(INCOMPAT_DATA_FILE)), None),
    "data-file-raw-alone": ((RAW_BIT,), None),
}


def ours(path: Path, **kwargs: str) -> dict[str, object]:
    return {key: value for key, value in image_json(read_image(path, **kwargs, tools=TOOLS), TOOLS).items()
            if key != "qdisk"}


@pytest.mark.parametrize("name", CASES)
def test_crafted_header_as_qemu_img_sees_it(tmp_path: Path, template: bytes, name: str) -> None:
    patches, problem = CASES[name]
    path = crafted(tmp_path / f"{name}.qcow2", template, *patches)
    expected = qemu_img_verdict(path)
    assert isinstance(expected, str) == (problem is not None), expected
    if problem is None:
        assert ours(path) == expected
    else:
        with pytest.raises(ImageError, match=rf"^{path}: .*{problem}"):
            read_image(path, tools=TOOLS)


def test_virtual_size_is_in_whole_sectors(tmp_path: Path, template: bytes) -> None:
    image = read_image(crafted(tmp_path / "odd.qcow2", template, size(1000)), tools=TOOLS)
    assert image.header is not None
    assert (image.header.size, image.virtual_size) == (1000, 512)


@pytest.mark.parametrize("length", [512, 4096])
def test_raw_size_in_whole_sectors(tmp_path: Path, length: int) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\1" * length)
    assert ours(path) == qemu_img_verdict(path)
    assert ours(path, format="raw") == qemu_img_verdict(path, "-f", "raw")


@pytest.mark.parametrize("length", [1, 511, 513, 1000])
def test_raw_size_off_sectors(tmp_path: Path, length: int) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\1" * length)
    assert ours(path) == qemu_img_verdict(path)

"""Bad images: one clean ImageError naming the file and the problem, never a traceback."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qdisk.image import ImageError, ImageInfo, read_chain, read_image

from image_kinds import qemu_img

pytestmark = pytest.mark.qemu

Patch = Callable[[bytearray], None]


def put(offset: int, fmt: str, value: int) -> Patch:
    def patch(header: bytearray) -> None:
        struct.pack_into(fmt, header, offset, value)
    return patch


@pytest.fixture(scope="module")
def real_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real qcow2 image with a backing name, a backing format and an allocated L2 table."""
    directory = tmp_path_factory.mktemp("real")
    qemu_img("create", "-q", "-f", "qcow2", str(directory / "base.qcow2"), "1G")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
             str(directory / "top.qcow2"))
    return (directory / "top.qcow2").read_bytes()


@pytest.mark.parametrize(("patch", "problem"), [
    (put(0, ">I", 0x51464900), r"is not a qcow2 image"),
    (put(4, ">I", 1), r"qcow version 1 image: not supported"),
    (put(4, ">I", 4), r"qcow2 version 4: only versions 2 and 3 exist"),
    (put(20, ">I", 8), r"cluster_bits 8 is out of range \(9 to 21\)"),
    (put(20, ">I", 22), r"cluster_bits 22 is out of range"),
    (put(36, ">I", 2**31), r"L1 table of 2147483648 entries is too large"),
    (put(36, ">I", 0), r"L1 table of 0 entries is too small"),
    (put(40, ">Q", 2**40), r"L1 table \(offset 1099511627776, 16 bytes\) extends past the end"),
    (put(100, ">I", 2**20), r"header_length 1048576 is past the end of the file"),
    (put(100, ">I", 96), r"header_length 96 is below the minimum of 104"),
    (put(16, ">I", 1024), r"backing file name is too long \(1024 bytes, at most 1023\)"),
    (put(32, ">I", 2), r"is encrypted \(luks\)"),
    (put(32, ">I", 7), r"unknown encryption method 7"),
    (put(96, ">I", 7), r"refcount_order 7 is out of range"),
    (put(72, ">Q", 1 << 9), r"unknown incompatible features \(bits 0x200\)"),
])
def test_bad_header(tmp_path: Path, real_image: bytes, patch: Patch, problem: str) -> None:
    data = bytearray(real_image)
    patch(data)
    path = tmp_path / "bad.qcow2"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=rf"^{re.escape(str(path))}: .*{problem}") as caught:
        read_image(path, format="qcow2")
    assert "\n" not in str(caught.value)


def test_truncated_file(tmp_path: Path, real_image: bytes) -> None:
    path = tmp_path / "short.qcow2"
    path.write_bytes(real_image[:50])
    with pytest.raises(ImageError, match="is truncated: 50 bytes"):
        read_image(path)


def test_no_magic_is_raw_unless_qcow2_is_expected(tmp_path: Path) -> None:
    path = tmp_path / "data.img"
    path.write_bytes(b"\1" * 4096)
    assert read_image(path).format == "raw"
    with pytest.raises(ImageError, match="is not a qcow2 image"):
        read_image(path, format="qcow2")


def test_vanished_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="gone.qcow2: does not exist"):
        read_image(tmp_path / "gone.qcow2")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), min_size=1,
                          max_size=8),
       truncate=st.one_of(st.none(), st.integers(0, 4096)))
def test_mutated_headers_give_clean_errors(tmp_path: Path, real_image: bytes,
                                           mutations: list[tuple[int, int]],
                                           truncate: int | None) -> None:
    data = bytearray(real_image)
    for offset, value in mutations:
        data[offset] = value
    path = tmp_path / "fuzz.qcow2"
    path.write_bytes(bytes(data[:truncate]))
    (tmp_path / "base.qcow2").write_bytes(real_image[:0])
    try:
        chain = read_chain(path)
    except ImageError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
    else:
        assert all(isinstance(image, ImageInfo) for image in chain)

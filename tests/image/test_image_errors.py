"""Bad images: one clean ImageError naming the file and the problem, never a traceback,
and never a read beyond what the header and its tables need."""

from __future__ import annotations

import errno
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qdisk.image.file import ImageError
from qdisk.image.info import ImageInfo, read_chain, read_image
from qdisk.image.qcow2 import MAX_L1_ENTRIES
from qdisk.settings import Tools

from image_kinds import Patch, put, qemu_img

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

# Where qemu-img puts the tables of a new 1 GiB image with 64 KiB clusters (checked below).
REFCOUNT_TABLE_OFFSET = 0x10000
L1_TABLE_OFFSET = 0x30000


@pytest.fixture(scope="module")
def real_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real qcow2 image with a backing name, a backing format and a 2-entry L1 table."""
    directory = tmp_path_factory.mktemp("real")
    qemu_img("create", "-q", "-f", "qcow2", str(directory / "base.qcow2"), "1G")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
             str(directory / "top.qcow2"))
    data = (directory / "top.qcow2").read_bytes()
    assert struct.unpack_from(">IQQ", data, 36) == (2, L1_TABLE_OFFSET, REFCOUNT_TABLE_OFFSET)
    assert len(data) == L1_TABLE_OFFSET + 16
    return data


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every (offset, length) the reader asks of the OS."""
    seen: list[tuple[int, int]] = []
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        seen.append((offset, length))
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", pread)
    return seen


def refuse(path: Path, problem: str, **kwargs: str) -> ImageError:
    """The one-line ImageError that reading ``path`` gives, which must name it first."""
    with pytest.raises(ImageError, match=rf"^{re.escape(str(path))}: .*{problem}") as caught:
        read_image(path, **kwargs, tools=TOOLS)
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(("patch", "problem"), [
    (put(0, ">I", 0x51464900), r"is not a qcow2 image"),
    (put(4, ">I", 1), r"qcow version 1 image: not supported"),
    (put(4, ">I", 4), r"qcow2 version 4: only versions 2 and 3 exist"),
    (put(20, ">I", 8), r"cluster_bits 8 is out of range \(9 to 21\)"),
    (put(20, ">I", 22), r"cluster_bits 22 is out of range"),
    (put(20, ">I", 2**31), r"cluster_bits 2147483648 is out of range"),
    (put(36, ">I", 2**31), r"L1 table of 2147483648 entries is too large \(at most 4194304\)"),
    (put(36, ">I", 2**32 - 1), r"L1 table of 4294967295 entries is too large"),
    (put(36, ">I", 0), r"L1 table of 0 entries is too small"),
    (put(40, ">Q", 2**40), r"L1 table \(offset 1099511627776, 16 bytes\) extends past the end"),
    (put(40, ">Q", 2**63 + 2**16), r"L1 table \(offset 9223372036854841344, 16 bytes\) extends"),
    (put(40, ">Q", L1_TABLE_OFFSET + 8), r"L1 table offset 196616 is not aligned to a cluster"),
    (put(48, ">Q", 2**40), r"refcount table \(offset 1099511627776, 65536 bytes\) extends past"),
    (put(48, ">Q", REFCOUNT_TABLE_OFFSET + 512), r"refcount table offset 66048 is not aligned"),
    (put(56, ">I", 0), r"has no refcount table"),
    (put(56, ">I", 129), r"refcount table of 129 clusters is too large \(at most 128\)"),
    (put(60, ">I", 65537), r"snapshot table of 65537 snapshots is too large"),
    (put(100, ">I", 2**20), r"header_length 1048576 is past the end of the file"),
    (put(100, ">I", 2**32 - 8), r"header_length 4294967288 is past the end of the file"),
    (put(100, ">I", 65536 + 8), r"header_length 65544 exceeds the cluster size \(65536\)"),
    (put(100, ">I", 96), r"header_length 96 is below the minimum of 104"),
    (put(8, ">Q", 2**63), r"backing file name offset 9223372036854775808 lies outside"),
    (put(16, ">I", 1024), r"backing file name is too long \(1024 bytes, at most 1023\)"),
    (put(16, ">I", 2**32 - 1), r"backing file name is too long \(4294967295 bytes"),
    (put(32, ">I", 2), r"is encrypted \(luks\)"),
    (put(32, ">I", 7), r"unknown encryption method 7"),
    (put(96, ">I", 7), r"refcount_order 7 is out of range"),
    (put(72, ">Q", 1 << 9), r"unknown incompatible features \(bits 0x200\)"),
])
def test_bad_header(tmp_path: Path, real_image: bytes, reads: list[tuple[int, int]],
                    patch: Patch, problem: str) -> None:
    data = bytearray(real_image)
    patch(data)
    path = tmp_path / "bad.qcow2"
    path.write_bytes(data)
    refuse(path, problem, format="qcow2")
    # Refused from the first block alone: no absurd size or offset is ever read.
    assert reads == [(0, 4096)]


@pytest.mark.parametrize(("length", "problem"), [
    (0, "is empty: not a disk image"),
    (1, "is truncated: 1 bytes, shorter than a qcow2 header"),
    (3, "is truncated: 3 bytes"),
    (4, "is truncated: 4 bytes"),
    (50, "is truncated: 50 bytes, shorter than a qcow2 header"),
    (72, "is truncated: 72 bytes, shorter than a qcow2 version 3 header"),
    (103, "is truncated: 103 bytes"),
    (104, "header_length 112 is past the end of the file"),
    (600, r"refcount table \(offset 65536, 65536 bytes\) extends past the end of the file "
          r"\(600 bytes\): the file is truncated"),
    (L1_TABLE_OFFSET, r"L1 table \(offset 196608, 16 bytes\) extends past the end"),
    (L1_TABLE_OFFSET + 15, r"L1 table \(offset 196608, 16 bytes\) extends past the end"),
])
def test_truncated_file(tmp_path: Path, real_image: bytes, length: int, problem: str) -> None:
    path = tmp_path / "short.qcow2"
    path.write_bytes(real_image[:length])
    refuse(path, problem)


def test_only_the_l1_entries_that_map_the_disk_are_read(tmp_path: Path, real_image: bytes,
                                                         reads: list[tuple[int, int]]) -> None:
    # The largest L1 table QEMU accepts, on a 1 GiB disk that needs 2 of its entries.
    data = bytearray(real_image)
    struct.pack_into(">I", data, 36, MAX_L1_ENTRIES)
    path = tmp_path / "big-l1.qcow2"
    path.write_bytes(data)
    os.truncate(path, L1_TABLE_OFFSET + MAX_L1_ENTRIES * 8)
    assert read_image(path, tools=TOOLS).allocated_l2_tables == 0
    assert reads == [(0, 4096), (L1_TABLE_OFFSET, 16)]


def test_no_magic_is_raw_unless_qcow2_is_expected(tmp_path: Path) -> None:
    path = tmp_path / "data.img"
    path.write_bytes(b"\1" * 4096)
    assert read_image(path, tools=TOOLS).format == "raw"
    refuse(path, r"is not a qcow2 image \(no qcow2 magic 'QFI\\xfb'\)", format="qcow2")


def test_an_empty_raw_file_is_a_raw_image_when_raw_is_expected(tmp_path: Path) -> None:
    path = tmp_path / "empty.raw"
    path.touch()
    image = read_image(path, format="raw", tools=TOOLS)
    assert (image.format, image.virtual_size) == ("raw", 0)


def test_vanished_file(tmp_path: Path) -> None:
    refuse(tmp_path / "gone.qcow2", "does not exist$")


def test_directory(tmp_path: Path) -> None:
    refuse(tmp_path, "is a directory, not an image$")


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    refuse(path, "is neither a regular file nor a block device$")


def test_character_device() -> None:
    refuse(Path("/dev/null"), "is neither a regular file nor a block device$")


def test_read_error(tmp_path: Path, real_image: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "failing.qcow2"
    path.write_bytes(real_image)

    def fail(*_args: object) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pread", fail)
    refuse(path, "cannot be read: Input/output error$")


@pytest.mark.parametrize("method", ["aes", "luks"])
def test_real_encrypted_image(tmp_path: Path, method: str) -> None:
    path = tmp_path / "secret.qcow2"
    # LUKS: QEMU times its key derivation by thread CPU time and gives up at random
    # ("Unable to get accurate CPU usage") when a round measures 0 ms, about half the
    # time here: try again. The legacy AES method has no such step.
    options = f"encrypt.format={method},encrypt.key-secret=key"
    if method == "luks":
        options += ",encrypt.iter-time=10"  # milliseconds of key derivation, not QEMU's 2 s
    for _attempt in range(20):
        result = subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=key,data=pass",
             "-o", options, str(path), "16M"], capture_output=True, text=True)
        if result.returncode == 0:
            break
        assert "Unable to get accurate CPU usage" in result.stderr, result.stderr
        path.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    refuse(path, rf"is encrypted \({method}\): encrypted images are not supported$")


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
    # The backing file (if the mutated name still says base.qcow2) is empty: refused too.
    (tmp_path / "base.qcow2").write_bytes(b"")
    try:
        chain = read_chain(path, tools=TOOLS)
    except ImageError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    else:
        assert all(isinstance(image, ImageInfo) for image in chain)

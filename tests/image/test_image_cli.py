"""`qdisk image info` end to end: qemu-img's layout, and bad images as one line, exit 2."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from cli_helpers import RunQdisk
from image_kinds import qemu_img

pytestmark = pytest.mark.qemu


def bad_images(directory: Path) -> dict[str, str]:
    """File name -> the problem ``image info`` must report for it."""
    qemu_img("create", "-q", "-f", "qcow2", str(directory / "good.qcow2"), "1G")
    good = (directory / "good.qcow2").read_bytes()

    def patched(name: str, offset: int, fmt: str, value: int) -> None:
        data = bytearray(good)
        struct.pack_into(fmt, data, offset, value)
        (directory / name).write_bytes(data)

    patched("v4.qcow2", 4, ">I", 4)
    patched("cluster-bits.qcow2", 20, ">I", 30)
    patched("l1-size.qcow2", 36, ">I", 2**32 - 1)
    patched("header-length.qcow2", 100, ">I", 2**32 - 8)
    (directory / "truncated.qcow2").write_bytes(good[:90])
    (directory / "empty.qcow2").touch()
    (directory / "dir.qcow2").mkdir()
    os.mkfifo(directory / "fifo.qcow2")
    return {
        "v4.qcow2": "has qcow2 version 4: only versions 2 and 3 exist",
        "cluster-bits.qcow2": "cluster_bits 30 is out of range (9 to 21)",
        "l1-size.qcow2": "L1 table of 4294967295 entries is too large (at most 4194304)",
        "header-length.qcow2": f"header_length 4294967288 is past the end of the file "
                               f"({len(good)} bytes)",
        "truncated.qcow2": "is truncated: 90 bytes, shorter than a qcow2 version 3 header",
        "empty.qcow2": "is empty: not a disk image",
        "dir.qcow2": "is a directory, not an image",
        "fifo.qcow2": "is neither a regular file nor a block device",
        "gone.qcow2": "does not exist",
    }


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("bad")
    return directory, bad_images(directory)


@pytest.mark.parametrize("name", ["v4.qcow2", "cluster-bits.qcow2", "l1-size.qcow2",
                                  "header-length.qcow2", "truncated.qcow2", "empty.qcow2",
                                  "dir.qcow2", "fifo.qcow2", "gone.qcow2"])
@pytest.mark.parametrize("command", [("image", "info"), ("image", "info", "--backing-chain"),
                                     ("cache", "plan"), ("cache", "explain")])
def test_bad_image_is_one_line_and_exit_2(run_qdisk: RunQdisk, bad: tuple[Path, dict[str, str]],
                                          name: str, command: tuple[str, ...]) -> None:
    directory, problems = bad
    path = directory / name
    message = f"{path}: {problems[name]}"
    result = run_qdisk(*command, str(path))
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"qdisk: {message}\n")
    result = run_qdisk(*command, "--json", str(path))
    assert (result.exit_code, json.loads(result.stdout), result.stderr) == (
        2, {"errors": [{"message": message}]}, "")


def test_format_option_refuses_a_file_of_another_format(run_qdisk: RunQdisk,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "data.qcow2"
    path.write_bytes(b"\1" * 1024)
    assert json.loads(run_qdisk("image", "info", "--json", str(path)).stdout)["format"] == "raw"
    result = run_qdisk("image", "info", "-f", "qcow2", str(path))
    assert (result.exit_code, result.stderr) == (
        2, f"qdisk: {path}: is not a qcow2 image (no qcow2 magic 'QFI\\xfb')\n")


def test_human_output_of_a_chain(run_qdisk: RunQdisk, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M,extended_l2=on", "base.qcow2",
             "3T")
    os.mkdir("sub")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2",
             "sub/top.qcow2")
    result = run_qdisk("image", "info", "--backing-chain", "sub/top.qcow2")
    assert result.exit_code == 0
    top, base = result.stdout.split("\n\n")
    assert top.splitlines()[:6] == [
        "image: sub/top.qcow2",
        "file format: qcow2",
        "virtual size: 3 TiB (3298534883328 bytes)",
        f"disk size: {top.splitlines()[3].split(': ')[1]}",
        "cluster_size: 65536",
        "backing file: ../base.qcow2 (actual path: sub/../base.qcow2)",
    ]
    assert "    extended l2: false" in top and "allocated L2 tables: 0 of 6144 L1 entries" in top
    assert base.splitlines()[0] == "image: sub/../base.qcow2"
    assert "    extended l2: true" in base and "backing file" not in base


def test_human_output_is_the_local_qemu_img_s(run_qdisk: RunQdisk, tmp_path: Path) -> None:
    """Line for line qemu-img's own layout, whichever QEMU is installed (8.0 and later add the
    protocol node, "Child node '/file'"), plus the lines only we print."""
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=128k,extended_l2=on",
             str(tmp_path / "disk.qcow2"), "1G")
    ours = run_qdisk("image", "info", str(tmp_path / "disk.qcow2")).stdout.splitlines()
    assert ours[-1] == "allocated L2 tables: 0 of 1 L1 entries"
    assert ours[:-1] == qemu_img("info", str(tmp_path / "disk.qcow2")).splitlines()

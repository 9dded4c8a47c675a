"""The native reader against `qemu-img info` of the same real images, and its chains."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qdisk.cli.image import image_json
from qdisk.image.file import ImageError
from qdisk.image.info import create_image, read_chain, read_image
from qdisk.settings import Tools

from cli_helpers import QDISK
from image_kinds import IMAGE_KINDS, qemu_img, qemu_img_info

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

NATIVE = [f"{name}.qcow2" for name in IMAGE_KINDS] + [
    "disk.raw", "sub/relative.qcow2", "absolute.qcow2", "on-raw.qcow2", "dirty-corrupt.qcow2"]


def ours(path: Path | str) -> dict[str, object]:
    document = image_json(read_image(path, tools=TOOLS), TOOLS)
    assert document.pop("qdisk")["source"] == "header"  # type: ignore[index]
    return document


@pytest.mark.parametrize("name", NATIVE)
def test_every_field_matches_qemu_img(image_dir: Path, name: str) -> None:
    assert ours(image_dir / name) == qemu_img_info(image_dir / name)


def test_relative_names_are_kept_as_given(image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(image_dir)
    assert ours("sub/relative.qcow2") == qemu_img_info("sub/relative.qcow2")


def test_header_details(image_dir: Path) -> None:
    image = read_image(image_dir / "c2m-extl2.qcow2", tools=TOOLS)
    assert image.header is not None
    assert (image.header.version, image.header.cluster_bits, image.header.header_length,
            image.extended_l2, image.header.l2_entry_bytes) == (3, 21, 112, True, 16)
    v2 = read_image(image_dir / "v2.qcow2", tools=TOOLS)
    assert v2.header is not None
    assert (v2.header.version, v2.header.header_length, v2.refcount_bits, v2.compat,
            v2.virtual_size) == (2, 72, 16, "0.10", 1024)
    assert read_image(image_dir / "c64k-rc4-lazy.qcow2", tools=TOOLS).lazy_refcounts


def test_allocated_l2_tables_counts_the_l1_entries_in_use(image_dir: Path) -> None:
    # 64 KiB clusters: one L2 table maps 512 MiB; the writes hit three of the four ranges.
    image = read_image(image_dir / "c64k.qcow2", tools=TOOLS)
    assert (image.allocated_l2_tables, image.allocated_l2_bytes) == (3, 3 * 65536)
    assert read_image(image_dir / "c64k-rc8.qcow2", tools=TOOLS).allocated_l2_tables == 0


def test_raw_reports_its_size(image_dir: Path) -> None:
    image = read_image(image_dir / "disk.raw", tools=TOOLS)
    assert (image.format, image.virtual_size, image.cluster_size) == ("raw", 3 * 2**20, None)


def test_other_formats_go_through_qemu_img(image_dir: Path) -> None:
    image = read_image(image_dir / "other.vmdk", tools=TOOLS)
    assert (image.format, image.virtual_size, image.from_qemu_img) == ("vmdk", 2**20, True)


def test_protocol_names_go_through_qemu_img(image_dir: Path) -> None:
    name = f'json:{{"driver": "qcow2", "file": {{"driver": "file", "filename": "{image_dir}/c64k.qcow2"}}}}'
    image = read_image(name, tools=TOOLS)
    assert (image.format, image.virtual_size, image.cluster_size, image.from_qemu_img) == \
        ("qcow2", 2 * 2**30, 65536, True)


def test_chain_resolves_relative_names_against_the_naming_image(image_dir: Path) -> None:
    chain = read_chain(image_dir / "absolute.qcow2", tools=TOOLS)
    assert [image.filename for image in chain] == [
        str(image_dir / "absolute.qcow2"), str(image_dir / "sub" / "relative.qcow2"),
        str(image_dir / "sub" / "../c64k.qcow2")]
    assert chain[1].backing_filename == "../c64k.qcow2"
    expected = qemu_img_info(image_dir / "absolute.qcow2", "--backing-chain")
    assert [image_json(image, TOOLS) | {"qdisk": None} for image in chain] == \
        [document | {"qdisk": None} for document in expected]  # type: ignore[operator]


def test_chain_ends_on_a_raw_backing_file(image_dir: Path) -> None:
    assert [image.format for image in read_chain(image_dir / "on-raw.qcow2", tools=TOOLS)] == ["qcow2", "raw"]


def chain_error(path: Path | str) -> str:
    with pytest.raises(ImageError) as caught:
        read_chain(path, tools=TOOLS)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_backing_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2",
             str(tmp_path / "top.qcow2"), "1M")
    assert chain_error(tmp_path / "top.qcow2") == (
        f"{tmp_path}/top.qcow2: backing file 'gone.qcow2' ({tmp_path}/gone.qcow2): does not exist")
    monkeypatch.chdir(tmp_path)
    assert chain_error("top.qcow2") == "top.qcow2: backing file 'gone.qcow2': does not exist"


def test_backing_name_too_long_for_the_system(tmp_path: Path) -> None:
    name = "x" * 300  # fits the header's 1023 bytes, not a file name's 255
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "qcow2",
             str(tmp_path / "top.qcow2"), "1M")
    assert chain_error(tmp_path / "top.qcow2").endswith(": cannot be opened: File name too long")


def test_backing_loop_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    qemu_img("create", "-q", "-f", "qcow2", "b.qcow2", "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2")
    qemu_img("rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2")
    assert chain_error("a.qcow2") == \
        "a.qcow2: the backing chain loops: a.qcow2 -> b.qcow2 -> a.qcow2"
    # The same file under another name is the same image.
    os.symlink("a.qcow2", "link.qcow2")
    assert chain_error("link.qcow2") == \
        "link.qcow2: the backing chain loops: link.qcow2 -> b.qcow2 -> a.qcow2"


def test_image_backed_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    qemu_img("create", "-q", "-f", "qcow2", "self.qcow2", "1M")
    qemu_img("rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", "self.qcow2")
    assert read_image("self.qcow2", tools=TOOLS).backing_filename == "self.qcow2"
    assert chain_error("self.qcow2") == \
        "self.qcow2: the backing chain loops: self.qcow2 -> self.qcow2"


def test_backing_format_qcow2_on_a_raw_file_is_refused(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "raw", str(tmp_path / "base.raw"), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "qcow2",
             str(tmp_path / "top.qcow2"), "1M")
    with pytest.raises(ImageError, match="is not a qcow2 image"):
        read_chain(tmp_path / "top.qcow2", tools=TOOLS)


def test_create_image_makes_the_image_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "new.qcow2"
    image = create_image(Tools(), path, "qcow2", 2**30,
                         options={"cluster_size": 131072, "lazy_refcounts": True})
    assert (image.virtual_size, image.cluster_size, image.lazy_refcounts) == (2**30, 131072, True)
    with pytest.raises(ImageError, match="already exists"):
        create_image(Tools(), path, "qcow2", 2**30)


def test_reads_an_image_a_running_qemu_holds(image_dir: Path) -> None:
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", str(image_dir / "c64k-rc2.qcow2")],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        assert read_image(image_dir / "c64k-rc2.qcow2", tools=TOOLS).refcount_bits == 2
    finally:
        holder.communicate(b"quit\n", timeout=10)


def test_unreadable_file(image_dir: Path, tmp_path: Path) -> None:
    """Root reads any file, so the reader runs in a user namespace where it is not root."""
    if subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged user namespace to be non-root in")
    path = tmp_path / "secret.qcow2"
    path.write_bytes((image_dir / "c64k.qcow2").read_bytes())
    path.chmod(0)
    result = subprocess.run(["unshare", "-U", QDISK, "image", "info", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"qdisk: {path}: is not readable (permission denied)\n")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path, tools=TOOLS)

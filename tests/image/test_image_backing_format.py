"""The format of every image is what QEMU opens it as: the backing format the overlay's
header names (used without probing, whatever the file's magic), else probed; and the
top's format given by the user (-f). Checked against qemu-img on the same files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qdisk.cli.image import image_json
from qdisk.image.file import ImageError
from qdisk.image.info import read_chain, read_image
from qdisk.image.qcow2 import EXT_BACKING_FORMAT
from qdisk.settings import Tools

from cli_helpers import RunQdisk
from image_kinds import crafted, extensions, qemu_img, qemu_img_verdict

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

# -F values qemu-img create accepts; each names a driver that QEMU then uses on base.qcow2.
BACKING_FORMATS = ("qcow2", "raw", "file", "vmdk", "qed", "qcow", "luks", "host_device")
# An extension type no QEMU knows: it ignores it, as if the overlay named no backing format.
UNKNOWN_EXTENSION = 0x12345678


def qemu_img_chain(path: Path, *extra: str) -> list[dict[str, object]] | str:
    """qemu-img's ``info --backing-chain`` of ``path`` as JSON, or its error message."""
    verdict = qemu_img_verdict(path, "--backing-chain", *extra)
    return verdict if isinstance(verdict, str) else list(verdict)


def our_chain(path: Path, image_format: str | None = None) -> list[dict[str, object]]:
    return [{key: value for key, value in image_json(image, TOOLS).items() if key != "qdisk"}
            for image in read_chain(path, format=image_format, tools=TOOLS)]


@pytest.fixture(scope="module")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base.qcow2 (a qcow2 file), base.raw (1000 bytes), and overlays over them:
    ``F.qcow2`` names backing format F for base.qcow2; ``probe-qcow2.qcow2`` and
    ``probe-raw.qcow2`` name no format, ``empty-format.qcow2`` an empty one."""
    directory = tmp_path_factory.mktemp("overlays")
    qemu_img("create", "-q", "-f", "qcow2", str(directory / "base.qcow2"), "1M")
    # Whole sectors, as raw: qemu-img rounds a raw file's size up, qdisk does not (yet).
    base = directory / "base.qcow2"
    os.truncate(base, -(-base.stat().st_size // 512) * 512)
    (directory / "base.raw").write_bytes(b"\1" * 1024)
    for backing_format in BACKING_FORMATS:
        qemu_img("create", "-q", "-u", "-f", "qcow2", "-b", "base.qcow2", "-F", backing_format,
                 str(directory / f"{backing_format}.qcow2"), "2M")
    template = (directory / "qcow2.qcow2").read_bytes()
    no_format = extensions((UNKNOWN_EXTENSION, b"qcow2"))
    crafted(directory / "probe-qcow2.qcow2", template, no_format)
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
             str(directory / "raw-named.qcow2"), "2M")
    crafted(directory / "probe-raw.qcow2", (directory / "raw-named.qcow2").read_bytes(), no_format)
    crafted(directory / "empty-format.qcow2", template, extensions((EXT_BACKING_FORMAT, b"")))
    return directory


OVERLAYS = [f"{backing_format}.qcow2" for backing_format in BACKING_FORMATS] + [
    "probe-qcow2.qcow2", "probe-raw.qcow2", "empty-format.qcow2"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_chain_agrees_with_qemu_img(overlays: Path, name: str) -> None:
    expected = qemu_img_chain(overlays / name)
    if isinstance(expected, str):
        with pytest.raises(ImageError) as caught:
            read_chain(overlays / name, tools=TOOLS)
        # The overlay, the backing name and QEMU's reason.
        message = str(caught.value)
        assert message.startswith(f"{overlays / name}: backing file 'base.qcow2' "), message
        assert expected.splitlines()[0].split(": ", 2)[-1] in message
    else:
        assert our_chain(overlays / name) == expected


def test_qemu_img_does_what_the_header_says(overlays: Path) -> None:
    """What the comparison above relies on: QEMU follows a named format without probing,
    and probes when none is named."""
    formats = {name: qemu_img_chain(overlays / name) for name in OVERLAYS}
    opened = {name: [document["format"] for document in chain]
              for name, chain in formats.items() if not isinstance(chain, str)}
    assert opened == {"qcow2.qcow2": ["qcow2", "qcow2"], "raw.qcow2": ["qcow2", "raw"],
                      "file.qcow2": ["qcow2", "file"], "probe-qcow2.qcow2": ["qcow2", "qcow2"],
                      "probe-raw.qcow2": ["qcow2", "raw"], "empty-format.qcow2": ["qcow2", "qcow2"]}


def test_a_qcow2_file_named_raw_is_read_as_raw(overlays: Path) -> None:
    top, base = read_chain(overlays / "raw.qcow2", tools=TOOLS)
    assert (top.backing_format, base.format, base.cluster_size, base.header) == \
        ("raw", "raw", None, None)
    assert base.virtual_size == (overlays / "base.qcow2").stat().st_size


def test_no_backing_format_is_probed_and_not_shown(overlays: Path) -> None:
    for name in ("probe-qcow2.qcow2", "empty-format.qcow2"):
        top, base = read_chain(overlays / name, tools=TOOLS)
        assert (top.backing_format, base.format) == (None, "qcow2")
        assert "backing-filename-format" not in image_json(top, TOOLS)


@pytest.mark.parametrize("image_format", ["raw", "qcow2", "vmdk", "file"])
def test_the_format_given_for_the_top_is_used_without_probing(overlays: Path,
                                                              image_format: str) -> None:
    path = overlays / "base.qcow2"
    expected = qemu_img_chain(path, "-f", image_format)
    if isinstance(expected, str):
        with pytest.raises(ImageError, match="qemu-img info failed: .*invalid VMDK"):
            read_image(path, format=image_format, tools=TOOLS)
    else:
        assert our_chain(path, image_format) == expected


def test_image_info_cli_follows_the_header(run_qdisk: RunQdisk, overlays: Path) -> None:
    result = run_qdisk("image", "info", "--backing-chain", "--json", str(overlays / "raw.qcow2"))
    assert [document["format"] for document in json.loads(result.stdout)] == ["qcow2", "raw"]
    result = run_qdisk("image", "info", "-f", "vmdk", str(overlays / "base.qcow2"))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"qdisk: {overlays / 'base.qcow2'}: qemu-img info failed: ")


def test_cache_plan_has_no_node_for_a_raw_backing_layer(run_qdisk: RunQdisk,
                                                       overlays: Path) -> None:
    """The base is a qcow2 file, but QEMU reads it as raw: no qcow2 cache to plan."""
    result = run_qdisk("cache", "plan", "--json", str(overlays / "raw.qcow2"))
    assert [node["filename"] for node in json.loads(result.stdout)["nodes"]] == \
        [str(overlays / "raw.qcow2")]
    result = run_qdisk("cache", "plan", "--json", str(overlays / "qcow2.qcow2"))
    assert len(json.loads(result.stdout)["nodes"]) == 2


def test_cache_plan_refuses_a_chain_qemu_cannot_open(run_qdisk: RunQdisk, overlays: Path) -> None:
    result = run_qdisk("cache", "plan", str(overlays / "vmdk.qcow2"))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"qdisk: {overlays / 'vmdk.qcow2'}: backing file "
                                    "'base.qcow2' ")
    assert "invalid VMDK image descriptor" in result.stderr


@pytest.mark.parametrize(("name", "problem"), [
    (b"\x80cow2", "format '\\x80cow2' is not the name of a QEMU driver"),
    (b"qcow2,x=y", "format 'qcow2,x=y' is not the name of a QEMU driver"),
    (b"QCOW2", "format 'QCOW2' is not the name of a QEMU driver"),
    (b"qcox2", "qemu-img info failed: Could not open '{base}': Unknown driver 'qcox2'"),
])
def test_a_backing_format_qemu_has_no_driver_for(overlays: Path, tmp_path: Path, name: bytes,
                                                 problem: str) -> None:
    path = crafted(tmp_path / "top.qcow2", (overlays / "qcow2.qcow2").read_bytes(),
                   extensions((EXT_BACKING_FORMAT, name)))
    (tmp_path / "base.qcow2").write_bytes((overlays / "base.qcow2").read_bytes())
    assert "Unknown driver" in qemu_img_chain(path)
    with pytest.raises(ImageError) as caught:
        read_chain(path, tools=TOOLS)
    base = tmp_path / "base.qcow2"
    assert str(caught.value) == \
        f"{path}: backing file 'base.qcow2' ({base}): {problem.format(base=base)}"

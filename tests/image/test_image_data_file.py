"""External data files: shown by `image info`, refused for use by a VM (Proxmox VE refuses
them: QEMU would open the named file read-write, wherever it lies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdisk.image.info import DataFileError, read_image, refuse_external_data_file
from qdisk.image.qcow2 import AUTOCLEAR_DATA_FILE_RAW, EXT_DATA_FILE, INCOMPAT_DATA_FILE
from qdisk.settings import Tools

from cli_helpers import RunQdisk
from image_kinds import Patch, crafted, extensions, put

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

UNSUPPORTED = "is not supported (Proxmox VE refuses them)"


def refusal(path: Path) -> str:
    with pytest.raises(DataFileError) as caught:
        refuse_external_data_file(read_image(path, tools=TOOLS))
    assert caught.value.filename == str(path)
    return str(caught.value)


@pytest.mark.parametrize(("name", "data_file"), [("datafile", "datafile.raw"),
                                               ("datafile-raw", "datafile2.raw")])
def test_real_images_with_a_data_file_are_refused(image_dir: Path, name: str,
                                                  data_file: str) -> None:
    path = image_dir / f"{name}.qcow2"
    assert refusal(path) == (f"{path}: qcow2 image with an external data file "
                             f"({image_dir}/{data_file}) {UNSUPPORTED}")


@pytest.mark.parametrize("name", ["c64k.qcow2", "v2.qcow2", "on-raw.qcow2", "disk.raw",
                                  "other.vmdk"])
def test_images_without_a_data_file_pass(image_dir: Path, name: str) -> None:
    refuse_external_data_file(read_image(image_dir / name, tools=TOOLS))


@pytest.mark.parametrize(("patches", "problem"), [
    # Named but unused (no incompatible bit): QEMU does not open it, Proxmox VE still refuses.
    ((extensions((EXT_DATA_FILE, b"/etc/shadow")),),
     f"qcow2 image with an external data file (/etc/shadow) {UNSUPPORTED}"),
    # Used but not named: QEMU refuses to start without a data-file option.
    ((put(72, ">Q", INCOMPAT_DATA_FILE),),
     f"qcow2 image with an external data file (none named in its header) {UNSUPPORTED}"),
    ((put(72, ">Q", INCOMPAT_DATA_FILE), extensions((EXT_DATA_FILE, b""))),
     f"qcow2 image with an external data file (none named in its header) {UNSUPPORTED}"),
    # QEMU: "data-file-raw requires a data file".
    ((put(88, ">Q", AUTOCLEAR_DATA_FILE_RAW),),
     "qcow2 image marked data-file-raw without an external data file: QEMU refuses to open it"),
])
def test_every_header_state_of_a_data_file_is_refused(tmp_path: Path, template: bytes,
                                                      patches: tuple[Patch, ...],
                                                      problem: str) -> None:
    path = crafted(tmp_path / "crafted.qcow2", template, *patches)
    assert refusal(path) == f"{path}: {problem}"


def test_image_info_shows_the_data_file(run_qdisk: RunQdisk, image_dir: Path) -> None:
    path = image_dir / "datafile-raw.qcow2"
    result = run_qdisk("image", "info", "--json", str(path))
    assert result.exit_code == 0
    data = json.loads(result.stdout)["format-specific"]["data"]
    assert (data["data-file"], data["data-file-raw"]) == (f"{image_dir}/datafile2.raw", True)
    text = run_qdisk("image", "info", str(path)).stdout
    assert f"    data file: {image_dir}/datafile2.raw\n    data file raw: true\n" in text

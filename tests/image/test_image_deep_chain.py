"""A backing chain 1500 images deep through every command: read and planned like
`qemu-img info --backing-chain` does; a VM sizing every image's cache refuses it by name
(exit 2), never an internal error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qdisk.image.info import read_chain
from qdisk.qemu.nodes import MAX_EXPLICIT_BACKING_IMAGES
from qdisk.settings import Tools

from cli_helpers import RunQdisk
from image_kinds import deep_chain

# The QEMU tools on PATH.
TOOLS = Tools()

pytestmark = pytest.mark.qemu

DEPTH = 1500
VMID = 8006


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dir storage whose images/8006/ holds the chain l0000.qcow2 <- ... <- l1500.qcow2."""
    root = tmp_path_factory.mktemp("deep")
    (root / "images" / str(VMID)).mkdir(parents=True)
    deep_chain(root / "images" / str(VMID), DEPTH)
    return root


def layer(storage: Path, index: int) -> Path:
    return storage / "images" / str(VMID) / f"l{index:04}.qcow2"


def test_the_reader_follows_the_whole_chain_as_qemu_img(storage: Path) -> None:
    top = layer(storage, DEPTH)
    result = subprocess.run(["qemu-img", "info", "--output=json", "-U", "--backing-chain",
                             str(top)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = [(document["filename"], document["format"], document["virtual-size"])
                for document in json.loads(result.stdout)]
    chain = read_chain(top, tools=TOOLS)
    assert [(image.filename, image.format, image.virtual_size) for image in chain] == expected
    assert len(chain) == DEPTH + 1


def test_image_info_and_cache_plan_show_every_image(run_qdisk: RunQdisk, storage: Path) -> None:
    top = str(layer(storage, DEPTH))
    result = run_qdisk("image", "info", "--backing-chain", "--json", top)
    assert (result.exit_code, len(json.loads(result.stdout))) == (0, DEPTH + 1)
    result = run_qdisk("cache", "plan", "--json", top)
    assert (result.exit_code, len(json.loads(result.stdout)["nodes"])) == (0, DEPTH + 1)


def showcmd(run_qdisk: RunQdisk, home: Path, storage: Path, drive: str,
            syntax: str = "blockdev") -> tuple[int, str, str]:
    (home / "storage.cfg").write_text(f"dir: local\n\tpath {storage}\n\tcontent images\n")
    (home / "qemu-server").mkdir(exist_ok=True)
    (home / "qemu-server" / f"{VMID}.conf").write_text(f"scsi0: local:{VMID}/{drive}\n")
    result = run_qdisk("vm", "showcmd", str(VMID), "--syntax", syntax)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("syntax", ["blockdev", "drive"])
def test_a_vm_sizing_every_image_refuses_the_chain_by_name(run_qdisk: RunQdisk, home: Path,
                                                           storage: Path, syntax: str) -> None:
    drive = f"l{DEPTH:04}.qcow2,qcow2-cache-size-based-on-disk=1"
    assert showcmd(run_qdisk, home, storage, drive, syntax) == (
        2, "", f"qdisk: scsi0: {layer(storage, DEPTH)}: its backing chain of {DEPTH} images is "
               f"too deep for a QEMU node per image (at most {MAX_EXPLICIT_BACKING_IMAGES}), "
               "which sizing each image's cache needs\n")


def test_the_deepest_chain_sized_per_image(run_qdisk: RunQdisk, home: Path,
                                           storage: Path) -> None:
    limit = MAX_EXPLICIT_BACKING_IMAGES
    code, out, _err = showcmd(run_qdisk, home, storage,
                              f"l{limit:04}.qcow2,qcow2-cache-size-based-on-disk=1")
    assert (code, out.count('"cache-size":')) == (0, limit + 1)
    code, _out, err = showcmd(run_qdisk, home, storage,
                              f"l{limit + 1:04}.qcow2,qcow2-cache-size-based-on-disk=1")
    assert (code, f"backing chain of {limit + 1} images is too deep" in err) == (2, True)


def test_without_the_auto_size_qemu_opens_the_chain_from_the_headers(
        run_qdisk: RunQdisk, home: Path, storage: Path) -> None:
    code, out, err = showcmd(run_qdisk, home, storage, f"l{DEPTH:04}.qcow2")
    assert (code, err, out.count('"backing"')) == (0, "", 0)

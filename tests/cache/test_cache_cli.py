"""`qdisk cache plan` and `qdisk cache explain`, and `qdisk image info` end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qdisk.units import MIB

from cli_helpers import RunQdisk


@pytest.mark.qemu
def test_image_info_json_matches_qemu_img(run_qdisk: RunQdisk, images: dict[str, Path]) -> None:
    result = run_qdisk("image", "info", "--json", str(images["c2m-extl2"]))
    assert result.exit_code == 0
    ours = json.loads(result.stdout)
    ours.pop("qdisk")
    theirs = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                        str(images["c2m-extl2"])],
                                       capture_output=True, text=True, check=True).stdout)
    assert ours == theirs


def test_image_info_bad_image(run_qdisk: RunQdisk, tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb\0\0\0\x04" + bytes(100))
    result = run_qdisk("image", "info", str(bad))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"qdisk: {bad}: has qcow2 version 4: only versions 2 and 3 exist\n"
    result = run_qdisk("image", "info", "--json", "--backing-chain", str(bad))
    assert result.exit_code == 2 and "version 4" in json.loads(result.stdout)["errors"][0]["message"]


@pytest.mark.qemu
def test_plan_one_node_per_qcow2_image(run_qdisk: RunQdisk, images: dict[str, Path],
                                       tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(images["c64k-1t"]),
                    "-F", "qcow2", "-o", "cluster_size=2M", str(top)], check=True)
    result = run_qdisk("cache", "plan", "--json", str(top))
    assert result.exit_code == 0
    nodes = json.loads(result.stdout)["nodes"]
    assert [node["cluster-size"] for node in nodes] == [2 * MIB, 65536]
    # Exactly the keys of the issues (the plan, then per layer: the need, Proxmox VE's
    # rule, the memory, internal snapshots), nothing more.
    assert [list(node) for node in nodes] == [[
        "filename", "virtual-size", "cluster-size", "refcount-bits", "extended-l2", "auto",
        "default", "needed-l2-cache-size", "proxmox-ve", "memory", "internal-snapshots",
        "advice"]] * 2
    base = nodes[1]
    assert (base["filename"], base["virtual-size"], base["refcount-bits"], base["extended-l2"]) \
        == (str(images["c64k-1t"]), 2**40, 16, False)
    assert base["auto"] == {"cache-size": 160 * MIB, "l2-cache-size": 128 * MIB,
                            "refcount-cache-size": 32 * MIB}
    assert base["default"] == {"l2-cache-size": 32 * MIB, "refcount-cache-size": 262144,
                               "l2-cache-entry-size": 4096, "l2-coverage": 256 * 2**30}
    assert "(25%)" in base["advice"][0]
    text = run_qdisk("cache", "plan", str(top))
    assert text.exit_code == 0
    assert text.stdout.split("\n\n")[1].splitlines()[:3] == [
        f"{images['c64k-1t']}: qcow2, 1 TiB, clusters of 64 KiB, 16-bit refcounts",
        "  auto:    cache-size 160 MiB (L2 128 MiB + refcount 32 MiB)",
        "  default: L2 32 MiB in entries of 4 KiB, refcount 256 KiB, covers 256 GiB (25%)"]


@pytest.mark.qemu
def test_explain(run_qdisk: RunQdisk, images: dict[str, Path]) -> None:
    result = run_qdisk("cache", "explain", "--json", str(images["c64k-1t"]),
                       "--set", "l2-cache-size=64M", "--set", "l2-cache-entry-size=8k")
    assert result.exit_code == 0
    explained = json.loads(result.stdout)
    assert (explained["l2-cache-size"], explained["refcount-cache-size"],
            explained["l2-cache-entry-size"], explained["l2-coverage"]) == \
        (64 * MIB, 4 * 65536, 8192, 512 * 2**30)
    text = run_qdisk("cache", "explain", str(images["c64k-1t"]))
    assert text.exit_code == 0
    assert text.stdout.splitlines()[:6] == [
        f"{images['c64k-1t']}: defaults",
        "  l2-cache-size:        33554432 (8192 entries of 4096 bytes)",
        "  refcount-cache-size:  262144 (4 clusters)",
        "  l2-cache-entry-size:  4096",
        "  l2-coverage:          274877906944 (256 GiB, 25% of the disk)",
        "  cache-clean-interval: 600"]


@pytest.mark.qemu
def test_explain_gives_qemus_error(run_qdisk: RunQdisk, images: dict[str, Path]) -> None:
    result = run_qdisk("cache", "explain", "--json", str(images["c64k-2g"]),
                       "--set", "l2-cache-entry-size=128k")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"errors": [{"message": "L2 cache entry size must be a "
                                                    "power of two between 512 and the cluster "
                                                    "size (65536)"}]}
    result = run_qdisk("cache", "explain", str(images["c64k-2g"]), "--set", "cache-size=1M",
                       "--set", "l2-cache-size=2M")
    assert (result.exit_code, result.stderr) == (
        2, f"qdisk: {images['c64k-2g']}: l2-cache-size may not exceed cache-size\n")
    result = run_qdisk("cache", "explain", "--json", str(images["c64k-2g"]), "--set", "foo=1")
    assert (result.exit_code, json.loads(result.stdout)) == (2, {"errors": [
        {"message": "Block format 'qcow2' does not support the option 'foo'"}]})
    result = run_qdisk("cache", "explain", str(images["c64k-2g"]), "--set", "cache-size")
    assert result.exit_code == 2 and "'cache-size' is not OPTION=VALUE" in result.stderr


def test_explain_and_plan_need_a_qcow2_top(run_qdisk: RunQdisk, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(4096))
    for command in ("plan", "explain"):
        result = run_qdisk("cache", command, str(raw))
        assert (result.exit_code, result.stderr) == (
            2, f"qdisk: {raw}: is not a qcow2 image (no qcow2 magic 'QFI\\xfb')\n")


@pytest.mark.qemu
def test_vm_set_refuses_an_image_with_an_external_data_file(run_qdisk: RunQdisk,
                                                           home: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    path = home / "storage" / "local" / "images" / "100" / "vm-100-disk-0.qcow2"
    path.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={path}.data",
                    str(path), "1G"], check=True)
    result = run_qdisk("vm", "set", "100", "--scsi0", "local:100/vm-100-disk-0.qcow2")
    assert (result.exit_code, result.stderr) == (
        2, "qdisk: VM 100: invalid values, nothing changed:\n"
           f"  scsi0.file: {path}: qcow2 image with an external data file ({path}.data) is "
           "not supported (Proxmox VE refuses them)\n")
    assert "scsi0" not in run_qdisk("vm", "config", "100").stdout

"""`qdisk drive parse`."""

from __future__ import annotations

import json

from cli_helpers import RunQdisk


def test_valid_prints_the_canonical_string(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "size=1.5G,local:100/vm-100-disk-0.qcow2,ssd=yes")
    assert (result.exit_code, result.stdout, result.stderr) == \
        (0, "local:100/vm-100-disk-0.qcow2,size=1536M,ssd=1\n", "")


def test_warnings_go_to_stderr(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--key", "virtio1",
                       "local-lvm:vm-1-disk-0,format=raw,qcow2-l2-cache-size=8")
    assert result.exit_code == 0
    assert result.stdout == "local-lvm:vm-1-disk-0,format=raw,qcow2-l2-cache-size=8\n"
    assert result.stderr == ("warning: virtio1.qcow2-l2-cache-size: has no effect: the drive's "
                             "format is raw, not qcow2\n")


def test_invalid_prints_one_error_per_line(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "local:1/x.qcow2,cache=bad,qcow2-cache-size=2,"
                                         "qcow2-l2-cache-size=3")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "qdisk: scsi0.cache: value 'bad' does not have a value in the enumeration "
        "'none, writethrough, writeback, unsafe, directsync'",
        "qdisk: scsi0.qcow2-l2-cache-size: qcow2-l2-cache-size must be smaller than "
        "qcow2-cache-size: 3 MiB >= 2 MiB",
    ]


def test_json_valid(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--json", "local:1/x.raw,ssd=1,size=2G,mbps=1.5,"
                                                   "qcow2-cache-clean-interval=0")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "key": "scsi0",
        "normalized": "local:1/x.raw,mbps=1.5,qcow2-cache-clean-interval=0,size=2G,ssd=1",
        "drive": {"file": "local:1/x.raw", "mbps": 1.5, "qcow2-cache-clean-interval": 0,
                  "size": 2 << 30, "ssd": True},
        "warnings": ["scsi0.qcow2-cache-clean-interval: has no effect: the drive's format is "
                     "raw (from the file name), not qcow2"],
    }


def test_json_invalid(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--json", "--key", "ide0",
                       "x,qcow2-cache-size-based-on-disk=1,qcow2-cache-size=4")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"key": "ide0", "errors": [
        {"property": "file", "message": "invalid format - unable to parse volume ID 'x'"},
        {"property": "qcow2-cache-size-based-on-disk",
         "message": "qcow2-cache-size-based-on-disk is not compatible with qcow2-cache-size "
                    "being set: with it, the cache size is computed from the disk's size"},
    ]}


def test_json_unknown_key(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--json", "--key", "net0", "virtio=x")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["errors"][0]["property"] is None


def test_missing_string_is_a_usage_error(run_qdisk: RunQdisk) -> None:
    assert run_qdisk("drive", "parse").exit_code == 2

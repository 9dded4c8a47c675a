"""`qdisk drive parse`."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.parametrize("key", ["net0", "scsi31"])
def test_json_unknown_key_names_the_key(run_qdisk: RunQdisk, key: str) -> None:
    result = run_qdisk("drive", "parse", "--json", "--key", key, "virtio=x")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["errors"] == [
        {"property": key, "message": "not a drive key (drive keys are ide0-3, scsi0-30, "
                                     "virtio0-15, sata0-5, efidisk0, tpmstate0, unused0-255)"}]


def test_json_a_problem_of_the_whole_string_names_the_key(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--json", "--key", "virtio2", "=x,local:1/x.raw")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["errors"] == [
        {"property": "virtio2", "message": "missing key in comma-separated list property: '=x'"}]


def test_missing_string_is_a_usage_error(run_qdisk: RunQdisk) -> None:
    assert run_qdisk("drive", "parse").exit_code == 2


def test_a_pasted_config_line_brings_its_key(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--json",
                       "efidisk0: local-lvm:vm-100-disk-1,size=4M,efitype=4m,pre-enrolled-keys=1\n")
    assert result.exit_code == 0
    output = json.loads(result.stdout)
    assert (output["key"], output["normalized"]) == \
        ("efidisk0", "local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M")


def test_a_pasted_line_is_not_read_as_a_volume_of_storage_scsi0(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "scsi1: local-lvm:vm-100-disk-0,cache=bogus")
    assert result.exit_code == 2
    assert result.stderr == ("qdisk: scsi1.cache: value 'bogus' does not have a value in the "
                             "enumeration 'none, writethrough, writeback, unsafe, directsync'\n")


def test_a_pasted_line_of_another_key_is_refused(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--key", "scsi1", "--json", "scsi0: local:1/x.qcow2")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"key": "scsi1", "errors": [
        {"property": "scsi1", "message": "the string is a line of scsi0, not of scsi1"}]}


def test_a_pasted_line_that_is_no_drive(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "net0: virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0")
    assert result.exit_code == 2
    assert result.stderr.startswith("qdisk: net0: not a drive key (drive keys are ide0-3, ")


def test_an_empty_key_is_no_drive_key(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("drive", "parse", "--key", "", "local:1/x.qcow2")
    assert result.exit_code == 2
    assert result.stderr.startswith("qdisk: '': not a drive key")

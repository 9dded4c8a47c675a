"""The drive API others code against: Drive, parse_drive, print_drive, make_drive, keys."""

from __future__ import annotations

import pytest

from qdisk.cache.options import QCOW2_CACHE_KEYS
from qdisk.config.drive import (
    Drive,
    drive_keys,
    is_drive_key,
    make_drive,
    parse_drive,
    print_drive,
)
from qdisk.errors import DriveError, InvalidInputError, Problem


def test_drive_keys_in_qemu_server_order() -> None:
    keys = drive_keys()
    assert len(keys) == 4 + 31 + 16 + 6 + 1 + 1 + 256
    assert len(set(keys)) == len(keys)
    assert keys[:5] == ("ide0", "ide1", "ide2", "ide3", "scsi0")
    assert keys.index("scsi30") + 1 == keys.index("virtio0")
    assert keys.index("virtio15") + 1 == keys.index("sata0")
    assert keys[keys.index("sata5") + 1:keys.index("sata5") + 4] == ("efidisk0", "tpmstate0", "unused0")
    assert keys[-1] == "unused255"


@pytest.mark.parametrize(("key", "valid"), [
    ("scsi0", True), ("scsi30", True), ("scsi31", False), ("scsi00", False), ("net0", False),
    ("ide3", True), ("ide4", False), ("sata5", True), ("virtio15", True), ("efidisk0", True),
    ("efidisk1", False), ("tpmstate0", True), ("unused255", True), ("SCSI0", False), ("", False),
])
def test_is_drive_key(key: str, valid: bool) -> None:
    assert is_drive_key(key) is valid


def test_qcow2_cache_keys() -> None:
    assert QCOW2_CACHE_KEYS == (
        "qcow2-cache-size", "qcow2-cache-size-based-on-disk", "qcow2-l2-cache-size",
        "qcow2-l2-cache-entry-size", "qcow2-refcount-cache-size", "qcow2-cache-clean-interval")


def test_parsed_values_are_typed() -> None:
    drive = parse_drive("virtio3", "volume=local:100/vm-100-disk-0.qcow2,iothread=on,size=1.5G,"
                                   "mbps_wr=2.5,iops=7,cache=none,qcow2-l2-cache-size=64,"
                                   "bps_rd=1048576,bps_rd_length=3,mbps_rd_max=4").drive
    assert (drive.key, drive.interface, drive.index) == ("virtio3", "virtio", 3)
    assert dict(drive.values) == {
        "file": "local:100/vm-100-disk-0.qcow2", "bps_rd_max_length": 3, "cache": "none",
        "iops": 7, "iothread": True, "mbps_rd": 1.0, "mbps_rd_max": 4.0, "mbps_wr": 2.5,
        "qcow2-l2-cache-size": 64, "size": 1536 << 20}
    assert list(drive.values)[0] == "file"
    assert list(drive.values)[1:] == sorted(list(drive.values)[1:])
    assert drive.get("iothread") is True and drive.get("ssd") is None
    assert drive.file == "local:100/vm-100-disk-0.qcow2"
    assert not drive.is_cdrom
    assert drive.known_format == "qcow2"


def test_cdrom() -> None:
    assert parse_drive("ide2", "local:iso/x.iso,media=cdrom").drive.is_cdrom
    assert parse_drive("ide2", "cdrom").drive.is_cdrom
    assert not parse_drive("ide2", "none").drive.is_cdrom


def test_drives_are_values() -> None:
    one = parse_drive("scsi0", "local:1/x.qcow2,ssd=1,cache=none").drive
    two = parse_drive("scsi0", "cache=none,ssd=yes,file=local:1/x.qcow2").drive
    assert one == two and hash(one) == hash(two)
    assert one != parse_drive("scsi1", "local:1/x.qcow2,ssd=1,cache=none").drive


def test_drive_error_carries_every_problem() -> None:
    with pytest.raises(DriveError) as caught:
        parse_drive("scsi0", "local:1/x.qcow2,cache=bad,qcow2-l2-cache-entry-size=1000")
    error = caught.value
    assert isinstance(error, InvalidInputError)
    assert error.key == "scsi0"
    assert error.problems == (
        Problem("cache", "value 'bad' does not have a value in the enumeration "
                         "'none, writethrough, writeback, unsafe, directsync'"),
        Problem("qcow2-l2-cache-entry-size", "must be a power of two"))
    assert error.lines()[1] == "scsi0.qcow2-l2-cache-entry-size: must be a power of two"


def test_make_drive_runs_the_same_rules() -> None:
    parsed = make_drive("scsi0", {"file": "local:1/x.raw", "size": 32 << 30, "ssd": True,
                                  "mbps": 10, "qcow2-l2-cache-size": 8})
    assert print_drive(parsed.drive) == "local:1/x.raw,mbps=10,qcow2-l2-cache-size=8,size=32G,ssd=1"
    assert parsed.drive.values["mbps"] == 10.0
    assert parsed.warnings == ("scsi0.qcow2-l2-cache-size: has no effect: the drive's format is "
                               "raw (from the file name), not qcow2",)
    assert parsed.drive == parse_drive("scsi0", print_drive(parsed.drive)).drive


def test_make_drive_reports_every_problem() -> None:
    with pytest.raises(DriveError) as caught:
        make_drive("scsi0", {"file": "local:1/x,y", "ssd": "yes", "qcow2-cache-size": 4,
                             "qcow2-l2-cache-size": 4, "size": -1})
    assert caught.value.lines() == [
        "scsi0.file: illegal value with commas for file",
        "scsi0.ssd: type check ('boolean') failed - got 'yes'",
        "scsi0.size: value must have a minimum value of 0",
        "scsi0.qcow2-l2-cache-size: qcow2-l2-cache-size must be smaller than qcow2-cache-size: 4 MiB >= 4 MiB",
    ]


def test_make_drive_with_a_replaced_value() -> None:
    drive = parse_drive("scsi0", "local:1/x.qcow2,qcow2-cache-size=64").drive
    values = {**drive.values, "qcow2-cache-size-based-on-disk": True}
    del values["qcow2-cache-size"]
    assert print_drive(make_drive("scsi0", values).drive) == \
        "local:1/x.qcow2,qcow2-cache-size-based-on-disk=1"


def test_unknown_key() -> None:
    with pytest.raises(DriveError) as caught:
        make_drive("net0", {"file": "local:1/x.qcow2"})
    assert caught.value.problems[0].property == "net0"
    assert caught.value.lines()[0].startswith("net0: not a drive key")


def test_print_drive_of_a_hand_made_drive() -> None:
    drive = Drive("sata1", "sata", 1, {"ssd": False, "file": "/dev/sdb", "size": 1 << 30})
    assert print_drive(drive) == "/dev/sdb,size=1G,ssd=0"


@pytest.mark.parametrize(("values", "message"), [
    ({"volume": "local:1/a", "file": "local:1/b"},
     "duplicate key in comma-separated list property: file (volume is an alias of file)"),
    ({"file": "local:1/a", "volume": "local:1/b"},
     "duplicate key in comma-separated list property: volume (volume is an alias of file)"),
])
def test_make_drive_alias_and_target_are_a_duplicate(values: dict[str, object], message: str) -> None:
    with pytest.raises(DriveError) as caught:
        make_drive("scsi0", values)
    assert caught.value.problems == (Problem("file", message),)


# One minimal string per cross-field rule: every key but the file takes part in the conflict.
CONFLICTS = [
    ("scsi0", "mbps_max=2"), ("scsi0", "iops_rd_max=2"),
    ("scsi0", "mbps_wr=1,bps_wr_max_length=2"), ("scsi0", "iops=1,iops_max_length=2"),
    ("scsi0", "mbps=1,mbps_wr=1"), ("scsi0", "iops=1,iops_rd=1"),
    ("scsi0", "bps=1,mbps=1"), ("ide2", "media=cdrom,snapshot=1"),
    ("ide2", "media=cdrom,format=raw"), ("virtio0", "media=cdrom"),
    ("scsi0", "qcow2-cache-size=9,qcow2-l2-cache-size=4,qcow2-refcount-cache-size=4"),
    ("scsi0", "qcow2-cache-size-based-on-disk=1,qcow2-l2-cache-size=4"),
    ("scsi0", "qcow2-cache-size=4,qcow2-refcount-cache-size=4"),
]


@pytest.mark.parametrize(("key", "options"), CONFLICTS)
def test_a_cross_field_message_names_every_property_involved(key: str, options: str) -> None:
    with pytest.raises(DriveError) as caught:
        parse_drive(key, f"local:1/x.qcow2,{options}")
    [problem] = caught.value.problems
    for name in (option.partition("=")[0] for option in options.split(",")):
        assert name in problem.message, (name, problem)

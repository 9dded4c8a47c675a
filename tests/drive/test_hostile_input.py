"""Hostile drive strings through `qdisk drive parse`: each is refused with exit 2 and one
line naming the drive and the property, never an internal error; the throttle limits
qdisk accepts are the ones the real QEMU accepts."""

from __future__ import annotations

import json
import subprocess

import pytest

from qdisk.config.drive import parse_drive, qemu_throttle_value
from qdisk.errors import DriveError
from qdisk.qemu.rules import THROTTLE_LIMITS, throttle_group

from cli_helpers import RunQdisk

DIGITS_5000 = "1" * 5000
MAX_MBPS = "953674316.40625"  # 10^15 bytes/s in MiB/s, exactly

REFUSED = [
    # Throttle values out of QEMU's range, or that QEMU would read as something else.
    ("iops=-5", "scsi0.iops: value must have a minimum value of 0"),
    ("mbps=-0.5", "scsi0.mbps: value must have a minimum value of 0"),
    ("iops_rd=1000000000000001", "scsi0.iops_rd: value must have a maximum value of "
                                 "1000000000000000 (QEMU's limit)"),
    ("mbps=1e12", f"scsi0.mbps: value must have a maximum value of {MAX_MBPS} "
                  f"(10^15 bytes/s, QEMU's limit)"),
    ("mbps_wr=953674316.4063", f"scsi0.mbps_wr: value must have a maximum value of {MAX_MBPS} "
                               f"(10^15 bytes/s, QEMU's limit)"),
    ("mbps=1e308", f"scsi0.mbps: value must have a maximum value of {MAX_MBPS} "
                   f"(10^15 bytes/s, QEMU's limit)"),
    ("mbps=1e999", f"scsi0.mbps: value must have a maximum value of {MAX_MBPS} "
                   f"(10^15 bytes/s, QEMU's limit)"),
    ("mbps=-1e999", "scsi0.mbps: value must have a minimum value of 0"),
    ("mbps=1e-320", "scsi0.mbps: value must be 0 (no limit) or at least 9.5367431640625e-07 "
                    "(1 byte/s): QEMU counts whole bytes/s"),
    ("mbps_rd=0.0000009", "scsi0.mbps_rd: value must be 0 (no limit) or at least "
                          "9.5367431640625e-07 (1 byte/s): QEMU counts whole bytes/s"),
    ("mbps=nan", "scsi0.mbps: type check ('number') failed - got 'nan'"),
    ("mbps=inf", "scsi0.mbps: type check ('number') failed - got 'inf'"),
    ("mbps=-Infinity", "scsi0.mbps: type check ('number') failed - got '-Infinity'"),
    ("bps=-1", "scsi0.bps: value must have a minimum value of 0"),
    ("bps_wr=1000000000000001", "scsi0.bps_wr: value must have a maximum value of "
                                "1000000000000000 (QEMU's limit)"),
    ("iops=1,iops_max=2,iops_max_length=4294967296",
     "scsi0.iops_max_length: value must have a maximum value of 4294967295 (QEMU's limit)"),
    ("mbps=10,mbps_max=5", "scsi0.mbps_max: mbps_max cannot be lower than mbps: QEMU refuses "
                           "a burst rate below the rate"),
    ("iops_rd=10,iops_rd_max=9", "scsi0.iops_rd_max: iops_rd_max cannot be lower than iops_rd: "
                                 "QEMU refuses a burst rate below the rate"),
    ("mbps=1,mbps_max=1,bps_max_length=953674317",
     "scsi0.bps_max_length: bps_max_length is too long for mbps_max: QEMU allows at most "
     "953674316 s at this burst rate (length x rate <= 10^15)"),
    ("iops_wr=1,iops_wr_max=232831,iops_wr_max_length=4294967295",
     "scsi0.iops_wr_max_length: iops_wr_max_length is too long for iops_wr_max: QEMU allows at "
     "most 4294960722 s at this burst rate (length x rate <= 10^15)"),
    # Numbers too long for Python's int(), and sizes beyond 64 bits.
    (f"iops={DIGITS_5000}", "scsi0.iops: value must have a maximum value of 1000000000000000 "
                            "(QEMU's limit)"),
    (f"queues=-{DIGITS_5000}", "scsi0.queues: value must have a minimum value of 2"),
    (f"size={'9' * 500}", "scsi0.size: value must have a maximum value of 9223372036854775807 "
                          "(bytes: 8 EiB - 1)"),
    (f"size={'9' * 500}.5T", "scsi0.size: value must have a maximum value of "
                             "9223372036854775807 (bytes: 8 EiB - 1)"),
    ("size=8388608T", "scsi0.size: value must have a maximum value of 9223372036854775807 "
                      "(bytes: 8 EiB - 1)"),
    # A serial is url-encoded; what it decodes to is a device's serial: 20 printable bytes.
    ("serial=%00", "scsi0.serial: invalid format - the decoded value must be printable ASCII, "
                   "not %00"),
    ("serial=a%0Ab", "scsi0.serial: invalid format - the decoded value must be printable "
                     "ASCII, not %0A"),
    ("serial=%C3%A9", "scsi0.serial: invalid format - the decoded value must be printable "
                      "ASCII, not %C3"),
    ("serial=0123456789%2C%2C%2C%2C%2C%2C%2C%2C%2C%2C%2C",
     "scsi0.serial: invalid format - the decoded value may only be 20 bytes long, not 21"),
    # Text that no config file can hold.
    ("serial=a\udcffb", "scsi0.serial: value must be UTF-8 text"),
    ("cache=none\0", "scsi0.cache: value must not contain a NUL character"),
]


@pytest.mark.parametrize(("options", "message"), REFUSED)
def test_refused_with_one_line_naming_the_property(run_qdisk: RunQdisk, options: str,
                                                   message: str) -> None:
    result = run_qdisk("drive", "parse", f"local:100/vm-100-disk-0.raw,{options}")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"qdisk: {message}\n")


@pytest.mark.parametrize(("text", "message"), [
    ("/a\0b", "scsi0.file: value must not contain a NUL character"),
    ("/a\udcffb", "scsi0.file: value must be UTF-8 text"),
    ("ide0: local:1/x.raw,model=%00", "ide0.model: invalid format - the decoded value must be "
                                      "printable ASCII, not %00"),
    (f"ide0: local:1/x.raw,model={'%41' * 40}B", "ide0.model: value may only be 120 "
                                                 "characters long"),
    (f"ide0: local:1/x.raw,model={'A' * 41}", "ide0.model: invalid format - the decoded value "
                                              "may only be 40 bytes long, not 41"),
])
def test_refused_anywhere_in_the_string(run_qdisk: RunQdisk, text: str, message: str) -> None:
    result = run_qdisk("drive", "parse", text)
    assert (result.exit_code, result.stderr) == (2, f"qdisk: {message}\n")


@pytest.mark.parametrize(("options", "normalized"), [
    (f"mbps={MAX_MBPS},mbps_max={MAX_MBPS}", f"mbps={MAX_MBPS},mbps_max={MAX_MBPS}"),
    ("mbps_rd=9.5367431640625e-07", "mbps_rd=9.5367431640625e-07"),
    ("mbps=-0,iops=0", "iops=0,mbps=0"),
    ("iops=1,iops_max=232830,iops_max_length=4294967295",
     "iops=1,iops_max=232830,iops_max_length=4294967295"),
    ("serial=%20%7E0123456789012345%41", "serial=%20%7E0123456789012345%41"),
    ("size=8388607T", "size=8388607T"),
    (f"size=000{'0' * 5000}1", "size=1"),
])
def test_limits_themselves_are_accepted(run_qdisk: RunQdisk, options: str,
                                        normalized: str) -> None:
    result = run_qdisk("drive", "parse", f"local:1/x.raw,{options}")
    assert (result.exit_code, result.stdout) == (0, f"local:1/x.raw,{normalized}\n")


def _qemu_accepts(limits: dict[str, int]) -> tuple[bool, str]:
    """Whether qemu-system takes a throttle group with these limits, and its message."""
    group = json.dumps({"qom-type": "throttle-group", "id": "t", "limits": limits})
    result = subprocess.run(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display",
                             "none", "-S", "-monitor", "stdio", "-object", group],
                            input="quit\n", capture_output=True, text=True, timeout=60)
    return result.returncode == 0, result.stderr.strip()


_QEMU_NAMES = {limit.drive_key: limit.qemu_name for limit in THROTTLE_LIMITS}


@pytest.mark.qemu
@pytest.mark.parametrize("options", [
    f"mbps={MAX_MBPS},mbps_max={MAX_MBPS},bps_max_length=1",
    "iops_rd=1,iops_rd_max=232830,iops_rd_max_length=4294967295",
    "mbps_wr=9.5367431640625e-07,mbps_wr_max=1,bps_wr_max_length=953674316",
    # Refused by qdisk for what QEMU refuses: out of range, burst below the rate, too long.
    "iops=1000000000000001",
    "mbps=1e12",
    "iops=10,iops_max=9",
    "iops=1,iops_max=1,iops_max_length=4294967296",
    "mbps=1,mbps_max=1,bps_max_length=953674317",
])
def test_qemu_agrees_with_the_throttle_limits(options: str) -> None:
    """What qdisk accepts, the installed QEMU accepts (as the start command passes it); what it
    refuses, QEMU refuses too."""
    text = f"local:1/x.raw,{options}"
    try:
        group = throttle_group(parse_drive("scsi0", text).drive)
    except DriveError:
        # Refused: QEMU gets the values as written, converted as the start command would.
        values = dict(part.split("=") for part in options.split(","))
        group = {"limits": {_QEMU_NAMES[key]: qemu_throttle_value(key, float(value))
                            for key, value in values.items()}}
        expected = False
    else:
        expected = True
    accepted, message = _qemu_accepts(group["limits"])
    assert accepted == expected, message

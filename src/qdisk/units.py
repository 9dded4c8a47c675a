"""Byte units and numbers: byte counts written for people, Proxmox VE's disk sizes
(pve-common's parse_size / format_size), and 64-bit bounds."""

from __future__ import annotations

import re

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB


def format_bytes(size: int) -> str:
    """A byte count for people: ``32 MiB``, ``1.5 GiB``, ``512 B``."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


_SIZE_RE = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:([KMGT])(?:iB)?)?")
_UNIT_SHIFT = {"K": 10, "M": 20, "G": 30, "T": 40}
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# A whole number of more digits than this is beyond every bound, whatever its digits.
_MAX_DIGITS = 20


def whole_number(digits: str) -> int:
    """The value of ASCII ``digits``. A number of more than 20 digits (leading zeros aside)
    is beyond every bound, and Python converts at most 4300: it stands in as 10**20, which
    the range checks report as out of range."""
    significant = digits.lstrip("0")
    return 10**_MAX_DIGITS if len(significant) > _MAX_DIGITS else int(significant or "0")


def parse_size(text: str) -> int | None:
    """Bytes of a disk size like ``32G``, ``1.5G``, ``512MiB``, ``1000``; None if invalid.
    A fraction is computed in floating point and truncated, as pve-common's Perl does.
    A size of more than 20 digits comes back as 10**20 units (see :func:`whole_number`)."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        return None
    digits, fraction, unit = match.groups()
    multiplier = 1 << _UNIT_SHIFT[unit] if unit else 1
    whole = whole_number(digits)
    if fraction is not None:
        return int(float(f"{whole}.{fraction}") * multiplier)
    return whole * multiplier


def format_size(size: int) -> str:
    """The largest unit that divides exactly (``1610612736`` -> ``1536M``); like pve-common,
    0 prints as ``0T``."""
    unit = ""
    for larger in "KMGT":
        if size % 1024:
            break
        size //= 1024
        unit = larger
    return f"{size}{unit}"

"""QEMU's syntax for the cache options in ``-drive`` and ``--image-opts`` strings: sizes
with suffixes, numbers in any base, and the order QEMU reads them in."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from qdisk.cache.model import UINT64_LIMIT, CacheOptions, QemuCacheError, size_syntax_message
from qdisk.cache.options import QEMU_OPTION_NAMES, QemuSyntax, qemu_parse_order

_SIZE_SUFFIX_SHIFT = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
# qemu_strtosz: decimal (with a fraction only before a suffix) or hex (no suffix, no fraction).
_SIZE_RE = re.compile(r"\s*\+?(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<int>\d+)(?P<frac>\.\d*)?"
                      r"(?P<suffix>[bBkKmMgGtTpPeE])?)")
# A negative size, whole: QEMU 8.1's qemu_strtosz (parse_uint) says it is out of range; 7.2's
# (strtoull, then a check for '-') says so only when the magnitude overflows, else that it
# expects a non-negative number. With anything after the digits both call it syntax.
_NEGATIVE_RE = re.compile(r"\s*-(?P<digits>\d+)")
NEGATIVE_OUT_OF_RANGE_SINCE = (8, 1)
# The version of the QEMU that will parse the options, asked only when the answer matters
# (None: the newest QEMU).
QemuVersion = Callable[[], tuple[int, ...]] | None

# qemu_strtou64 with base 0: hex, octal or decimal; a minus sign wraps around.
_NUMBER_RE = re.compile(r"\s*(?P<sign>[+-]?)(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<oct>0[0-7]*)"
                        r"|(?P<dec>[1-9]\d*))")


def parse_qemu_size(option: str, text: str, qemu_version: QemuVersion = None) -> int:
    """A size as QEMU parses it in ``-drive``/``--image-opts`` (suffixes k M G T P E, ``0x``)."""
    match = _SIZE_RE.fullmatch(text)
    negative = _NEGATIVE_RE.fullmatch(text)
    if negative is not None and (_decimal(negative["digits"]) >= UINT64_LIMIT or qemu_version is None
                                 or qemu_version()[:2] >= NEGATIVE_OUT_OF_RANGE_SINCE):
        _in_size_range(option, text, UINT64_LIMIT)
    if match is None:
        raise QemuCacheError(size_syntax_message(option), option=option)
    if match["hex"] is not None:
        return _in_size_range(option, text, int(match["hex"], 16))
    shift = _SIZE_SUFFIX_SHIFT[match["suffix"].lower()] if match["suffix"] else 0
    fraction = match["frac"]
    if fraction and fraction != "." and float(fraction) and not shift:
        # A fraction needs a unit to scale it.
        raise QemuCacheError(size_syntax_message(option), option=option)
    # QEMU scales a 64-bit fixed-point fraction and rounds half up.
    fraction_fixed = int(float(fraction) * 2**64) if fraction and fraction != "." else 0
    scaled_fraction = fraction_fixed << shift
    value = (_decimal(match["int"]) << shift) + (scaled_fraction >> 64) + ((scaled_fraction >> 63) & 1)
    return _in_size_range(option, text, value)


def _in_size_range(option: str, text: str, value: int) -> int:
    if value >= UINT64_LIMIT:
        raise QemuCacheError(f"Value '{text}' is out of range for parameter '{option}'",
                             option=option)
    return value


def parse_qemu_number(option: str, text: str) -> int:
    """A number as QEMU parses it (``cache-clean-interval``): -1 wraps to 2^64 - 1."""
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        raise QemuCacheError(f"Parameter '{option}' expects a number", option=option)
    if match["hex"] is not None:
        magnitude = int(match["hex"], 16)
    elif match["oct"] is not None:
        magnitude = int(match["oct"], 8)
    else:
        magnitude = _decimal(match["dec"])
    if magnitude >= UINT64_LIMIT:
        raise QemuCacheError(f"Value '{text}' is too large for parameter '{option}'",
                             option=option)
    return (-magnitude) % UINT64_LIMIT if match["sign"] == "-" else magnitude


def _decimal(digits: str) -> int:
    """Decimal digits as a number, or 2^64 (out of every range) for more digits than that has:
    never converted, however many there are."""
    return UINT64_LIMIT if len(digits.lstrip("0")) > len(str(UINT64_LIMIT)) else int(digits)


def parse_cache_options(settings: Mapping[str, str], qemu_version: QemuVersion = None) -> CacheOptions:
    """Options given as QEMU's ``name=value`` text, checked like QEMU's qcow2 driver does
    (the options in QEMU's parse order, so the first bad one is the one QEMU names; its
    wording, where it changed, the one of ``qemu_version``)."""
    for option in settings:
        if option not in QEMU_OPTION_NAMES:
            raise QemuCacheError(f"Block format 'qcow2' does not support the option '{option}'",
                                 option=option)
    values: dict[str, int] = {}
    for descriptor in qemu_parse_order():
        name = descriptor.qemu_name
        if name is not None and name in settings:
            text = settings[name]
            values[name.replace("-", "_")] = (
                parse_qemu_size(name, text, qemu_version) if descriptor.qemu_syntax is QemuSyntax.SIZE
                else parse_qemu_number(name, text))
    return CacheOptions(**values)

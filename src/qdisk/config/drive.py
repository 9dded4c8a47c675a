"""The Proxmox VE drive language: ``scsi0: local:100/vm-100-disk-0.qcow2,cache=none,...``.

The schema of every bus as qemu-server 9.2 defines it (src/PVE/QemuServer/Drive.pm),
qemu-server's parse_drive rules, and the six ``qcow2-*`` cache keys of the Proxmox VE patch with
its cross-field rules. Unlike qemu-server, every problem of a string is reported, each
naming the drive key and the property it concerns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from qdisk.cache.options import QCOW2_OPTIONS, Qcow2Option, ignored_qcow2_keys
from qdisk.config import propstring
from qdisk.config.propstring import Checked, Property, Rule, Schema, Value
from qdisk.errors import DriveError, Problem
from qdisk.units import MIB

IMAGE_FORMATS = ("raw", "qcow", "qed", "qcow2", "vmdk", "cloop")
# Keys of ancient configs that qemu-server drops silently.
DROPPED_KEYS = frozenset({"cyls", "heads", "secs", "trans"})
# QEMU's throttle limits (util/throttle.c, checked on QEMU 7.2): rates and burst rates
# 0..10^15 bytes/s or operations/s, burst lengths 1..2^32-1 s (a uint32 in a throttle
# group's limits), and a burst length times its burst rate at most 10^15.
QEMU_THROTTLE_MAX = 10**15
QEMU_BURST_LENGTH_MAX = 2**32 - 1
QEMU_LIMIT = "QEMU's limit"


def _check_qm_path(text: str) -> str | None:
    # qemu-server's pve-volume-id-or-qm-path: also 'none' (empty drive) and 'cdrom' (host drive).
    return None if text in ("none", "cdrom") else propstring.VOLUME_ID_OR_PATH.check(text)


VOLUME_ID_OR_QM_PATH = propstring.StringFormat("pve-volume-id-or-qm-path", _check_qm_path)


def _file(format: propstring.StringFormat) -> Property:
    return propstring.string(format=format, optional=False, default_key=True,
                             description="The drive's backing volume.")


# --- the common keys (ide, sata, scsi, virtio) ---------------------------------------

_DIRECTIONS = ("", "_rd", "_wr")
_DIRECTION_WORDS = {"": "r/w", "_rd": "read", "_wr": "write"}


def _qcow2_property(option: Qcow2Option) -> Property:
    if option.boolean:
        return propstring.boolean(option.description)
    return propstring.integer(option.minimum, option.maximum, option.description)


def _throttle_properties() -> Iterator[tuple[str, Property]]:
    for direction in _DIRECTIONS:
        what = _DIRECTION_WORDS[direction]
        yield f"bps{direction}", propstring.integer(
            0, QEMU_THROTTLE_MAX, maximum_reason=QEMU_LIMIT,
            description=f"Maximum {what} speed in bytes per second (legacy, read as mbps).")
        yield f"mbps{direction}", _mbps(f"Maximum {what} speed in megabytes per second.")
        yield f"iops{direction}", _iops(f"Maximum {what} I/O in operations per second.")
        yield f"mbps{direction}_max", _mbps(
            f"Maximum unthrottled {what} pool in megabytes per second.")
        yield f"iops{direction}_max", _iops(
            f"Maximum unthrottled {what} I/O pool in operations per second.")
        for unit in ("bps", "iops"):
            yield f"{unit}{direction}_max_length", propstring.integer(
                1, QEMU_BURST_LENGTH_MAX, maximum_reason=QEMU_LIMIT,
                description=f"Maximum length of {what} I/O bursts in seconds.")


def _mbps(description: str) -> Property:
    # MB/s are MiB/s: QEMU gets int(value * 2^20) bytes/s, so 10^15 / 2^20 (exact) is the most.
    return propstring.number(0, QEMU_THROTTLE_MAX / MIB, description,
                             maximum_reason=f"10^15 bytes/s, {QEMU_LIMIT}")


def _iops(description: str) -> Property:
    return propstring.integer(0, QEMU_THROTTLE_MAX, description, maximum_reason=QEMU_LIMIT)


def qemu_throttle_value(name: str, value: Value) -> int:
    """A throttle key's value as QEMU gets it: MB/s as bytes/s (times 2^20, truncated as
    qemu-server does), operations and seconds as they are."""
    return int(float(value) * MIB) if name.startswith("mbps") else int(value)


_COMMON: dict[str, Property] = {
    "file": _file(VOLUME_ID_OR_QM_PATH),
    "media": propstring.choice("cdrom", "disk", description="The drive's media type."),
    "snapshot": propstring.boolean("Temporary snapshot mode: changes are discarded."),
    "cache": propstring.choice("none", "writethrough", "writeback", "unsafe", "directsync",
                               description="The drive's cache mode."),
    "format": propstring.choice(*IMAGE_FORMATS, description="The drive's image format."),
    "size": propstring.disk_size("Disk size (informational)."),
    "backup": propstring.boolean("Whether the drive is included in backups."),
    "replicate": propstring.boolean("Whether the drive is replicated."),
    "rerror": propstring.choice("ignore", "report", "stop", description="Read error action."),
    "werror": propstring.choice("enospc", "ignore", "report", "stop",
                                description="Write error action."),
    "aio": propstring.choice("native", "threads", "io_uring", description="AIO type."),
    "discard": propstring.choice("ignore", "on", description="Pass discard requests."),
    "detect_zeroes": propstring.boolean("Detect writes of zeroes and optimize them."),
    # qemu-server: url-encoded, up to 60 characters for 20 bytes (each may be %XX).
    "serial": propstring.string(format=propstring.url_encoded(20), max_length=60,
                                description="The drive's reported serial number, url-encoded."),
    "shared": propstring.boolean("Mark the local volume as available on all nodes."),
    **dict(_throttle_properties()),
    **{option.drive_key: _qcow2_property(option) for option in QCOW2_OPTIONS},
}

_COMMON_ALIASES = {
    "volume": "file",
    **{f"{unit}{direction}_length": f"{unit}{direction}_max_length"
       for unit in ("bps", "iops") for direction in ("_rd", "_wr")},
}

_BUS_KEYS: dict[str, dict[str, Property]] = {
    "ssd": {"ssd": propstring.boolean("Expose the drive as an SSD.")},
    "wwn": {"wwn": propstring.string(pattern=r"(0x)[0-9a-fA-F]{16}",
                                     description="The drive's worldwide name.")},
    "iothread": {"iothread": propstring.boolean("Use a separate I/O thread.")},
    "ro": {"ro": propstring.boolean("Read-only drive.")},
    "model": {"model": propstring.string(format=propstring.url_encoded(40), max_length=120,
                                         description="The drive's model name, url-encoded.")},
    "scsi": {
        "product": propstring.string(pattern=r"[A-Za-z0-9\-_\s]{0,16}",
                                     description="The drive's product name (16 bytes)."),
        "queues": propstring.integer(minimum=2, description="Number of queues."),
        "scsiblock": propstring.boolean("Pass the host SCSI device through (scsi-block)."),
        "vendor": propstring.string(pattern=r"[A-Za-z0-9\-_\s]{0,8}",
                                    description="The drive's vendor name (8 bytes)."),
    },
}


# --- cross-field rules ---------------------------------------------------------------
# A cross-field message names every property involved: the problem's ``property`` names
# only one of them (the one to change), and --json readers see the message alone.


def _is_set(values: Mapping[str, Value], name: str) -> bool:
    """qemu-server tests these rules with Perl truth, so ``mbps=0`` is no limit. We test
    the typed value: 0.0 is unset too, which keeps the rule true of the canonical string,
    where it prints as ``0``."""
    return bool(values.get(name))


def _requires(option: str, required: str) -> Rule:
    def check(values: Mapping[str, Value]) -> Iterator[Problem]:
        if _is_set(values, option) and not _is_set(values, required):
            yield Problem(option, f"{option} requires {required}")
    return Rule((option, required), check)


def _excludes(total: str, direction: str) -> Rule:
    def check(values: Mapping[str, Value]) -> Iterator[Problem]:
        if _is_set(values, total) and _is_set(values, direction):
            yield Problem(direction, f"{direction} cannot be combined with {total}: a total "
                                     f"limit excludes per-direction limits")
    return Rule((total, direction), check)


def _burst_not_below_rate(base: str) -> Rule:
    burst = f"{base}_max"

    def check(values: Mapping[str, Value]) -> Iterator[Problem]:
        if _is_set(values, base) and _is_set(values, burst) and \
                qemu_throttle_value(burst, values[burst]) < qemu_throttle_value(base, values[base]):
            yield Problem(burst, f"{burst} cannot be lower than {base}: QEMU refuses a burst "
                                 f"rate below the rate")
    return Rule((base, burst), check)


def _burst_length_fits(length: str, burst: str) -> Rule:
    def check(values: Mapping[str, Value]) -> Iterator[Problem]:
        if not (_is_set(values, length) and _is_set(values, burst)):
            return
        longest = QEMU_THROTTLE_MAX // qemu_throttle_value(burst, values[burst])
        if qemu_throttle_value(length, values[length]) > longest:
            yield Problem(length, f"{length} is too long for {burst}: QEMU allows at most "
                                  f"{longest} s at this burst rate (length x rate <= 10^15)")
    return Rule((length, burst), check)


def _throttle_rules() -> Iterator[Rule]:
    for direction in _DIRECTIONS:
        yield _requires(f"mbps{direction}_max", f"mbps{direction}")
        yield _requires(f"iops{direction}_max", f"iops{direction}")
        yield _requires(f"bps{direction}_max_length", f"mbps{direction}_max")
        yield _requires(f"iops{direction}_max_length", f"iops{direction}_max")
        for unit in ("mbps", "iops"):
            yield _burst_not_below_rate(f"{unit}{direction}")
        yield _burst_length_fits(f"bps{direction}_max_length", f"mbps{direction}_max")
        yield _burst_length_fits(f"iops{direction}_max_length", f"iops{direction}_max")
    for unit in ("mbps", "iops"):
        for direction in ("_rd", "_wr"):
            yield _excludes(unit, f"{unit}{direction}")


def _not_with_cdrom(name: str) -> Rule:
    def check(values: Mapping[str, Value]) -> Iterator[Problem]:
        if values.get("media") == "cdrom" and _is_set(values, name):
            yield Problem(name, f"{name} is not allowed with media=cdrom")
    return Rule(("media", name), check)


_CACHE_SIZE_KEYS = tuple(option.drive_key for option in QCOW2_OPTIONS if option.replaced_by_auto_size)


def _at_most_two_cache_sizes(values: Mapping[str, Value]) -> Iterator[Problem]:
    if all(name in values for name in _CACHE_SIZE_KEYS):
        yield Problem("qcow2-cache-size", "at most two of qcow2-cache-size, qcow2-l2-cache-size, "
                                          "qcow2-refcount-cache-size can be set simultaneously")


def _entry_size_power_of_two(values: Mapping[str, Value]) -> Iterator[Problem]:
    size = values.get("qcow2-l2-cache-entry-size")
    if isinstance(size, int) and (size <= 0 or size & (size - 1)):
        yield Problem("qcow2-l2-cache-entry-size", "must be a power of two")


def _based_on_disk_excludes_sizes(values: Mapping[str, Value]) -> Iterator[Problem]:
    given = [name for name in _CACHE_SIZE_KEYS if name in values]
    if values.get("qcow2-cache-size-based-on-disk") is True and given:
        yield Problem("qcow2-cache-size-based-on-disk",
                      f"qcow2-cache-size-based-on-disk is not compatible with "
                      f"{_enumerate(given)} being set: with it, the cache size is computed "
                      f"from the disk's size")


def _enumerate(names: list[str]) -> str:
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _part_smaller_than_total(part: str) -> Rule:
    def check(values: Mapping[str, Value]) -> Iterator[Problem]:
        total, size = values.get("qcow2-cache-size"), values.get(part)
        if isinstance(total, int) and isinstance(size, int) and size >= total:
            yield Problem(part, f"{part} must be smaller than qcow2-cache-size: "
                                f"{size} MiB >= {total} MiB")
    return Rule(("qcow2-cache-size", part), check)


_COMMON_RULES: tuple[Rule, ...] = (
    *_throttle_rules(),
    _not_with_cdrom("snapshot"),
    _not_with_cdrom("format"),
    Rule(_CACHE_SIZE_KEYS, _at_most_two_cache_sizes),
    Rule(("qcow2-l2-cache-entry-size",), _entry_size_power_of_two),
    Rule(("qcow2-cache-size-based-on-disk", *_CACHE_SIZE_KEYS), _based_on_disk_excludes_sizes),
    _part_smaller_than_total("qcow2-l2-cache-size"),
    _part_smaller_than_total("qcow2-refcount-cache-size"),
)


def _no_cdrom_on_virtio(values: Mapping[str, Value]) -> Iterator[Problem]:
    if values.get("media") == "cdrom":
        yield Problem("media", "media=cdrom is not allowed on virtio drives")


def _common_schema(*extras: str, rules: Iterable[Rule] = ()) -> Schema:
    properties = dict(_COMMON)
    for extra in extras:
        properties.update(_BUS_KEYS[extra])
    return Schema(properties, _COMMON_ALIASES, DROPPED_KEYS, (*_COMMON_RULES, *rules))


def _only(properties: dict[str, Property]) -> Schema:
    return Schema(properties, {"volume": "file"}, DROPPED_KEYS)


@dataclass(frozen=True)
class Bus:
    name: str
    count: int
    schema: Schema


# qemu-server's order of drive keys (valid_drive_names_with_unused).
BUSES: tuple[Bus, ...] = (
    Bus("ide", 4, _common_schema("model", "ssd", "wwn")),
    Bus("scsi", 31, _common_schema("iothread", "ro", "scsi", "ssd", "wwn")),
    Bus("virtio", 16, _common_schema("iothread", "ro",
                                     rules=[Rule(("media",), _no_cdrom_on_virtio)])),
    Bus("sata", 6, _common_schema("ssd", "wwn")),
    Bus("efidisk", 1, _only({
        "file": _file(VOLUME_ID_OR_QM_PATH),
        "format": _COMMON["format"],
        "size": _COMMON["size"],
        "efitype": propstring.choice("2m", "4m", description="Size and type of the OVMF vars."),
        "pre-enrolled-keys": propstring.boolean("Use vars with distribution keys enrolled."),
        "ms-cert": propstring.choice("2011", "2023", "2023k",
                                     description="Microsoft UEFI certificate generation."),
    })),
    Bus("tpmstate", 1, _only({
        "file": _file(VOLUME_ID_OR_QM_PATH),
        "format": propstring.choice("raw", "qcow2", "vmdk", description="The state's format."),
        "size": _COMMON["size"],
        "version": propstring.choice("v1.2", "v2.0", description="The TPM interface version."),
    })),
    Bus("unused", 256, _only({"file": _file(propstring.VOLUME_ID)})),
)

_BUS_BY_KEY: dict[str, tuple[Bus, int]] = {
    f"{bus.name}{index}": (bus, index) for bus in BUSES for index in range(bus.count)
}


def drive_keys() -> tuple[str, ...]:
    """Every drive key of every bus, in qemu-server's order (ide, scsi, virtio, sata,
    efidisk0, tpmstate0, unused)."""
    return tuple(_BUS_BY_KEY)


def is_drive_key(key: str) -> bool:
    return key in _BUS_BY_KEY


def schema_of(key: str) -> Schema:
    """The property schema of a drive key (raises DriveError for a key that is no drive)."""
    return _bus_of(key)[0].schema


def _bus_of(key: str) -> tuple[Bus, int]:
    try:
        return _BUS_BY_KEY[key]
    except KeyError:
        raise DriveError(key, [Problem(None, _unknown_key_message(key))]) from None


def _unknown_key_message(key: str) -> str:
    buses = ", ".join(f"{bus.name}0-{bus.count - 1}" if bus.count > 1 else f"{bus.name}0"
                      for bus in BUSES)
    return f"not a drive key (drive keys are {buses})"


# --- drives --------------------------------------------------------------------------


@dataclass(frozen=True)
class Drive:
    """A validated drive. ``values`` are typed (booleans bool, sizes int bytes, integers
    int, numbers float, others str) under their canonical names, in canonical order."""

    key: str
    interface: str
    index: int
    values: Mapping[str, Value]

    def __hash__(self) -> int:
        return hash((self.key, tuple(self.values.items())))

    def get(self, name: str) -> Value | None:
        return self.values.get(name)

    @property
    def file(self) -> str:
        return str(self.values["file"])

    @property
    def is_cdrom(self) -> bool:
        return self.values.get("media") == "cdrom" or self.file == "cdrom"

    @property
    def known_format(self) -> str | None:
        """The image format as far as the string tells: ``format=``, else a file name
        extension naming an image format (as qemu-server reads dir storage volumes)."""
        explicit = self.values.get("format")
        if isinstance(explicit, str):
            return explicit
        extension = re.search(r"\.([a-z0-9]+)$", self.file)
        if extension and extension.group(1) in IMAGE_FORMATS:
            return extension.group(1)
        return None


@dataclass(frozen=True)
class ParsedDrive:
    drive: Drive
    warnings: tuple[str, ...]


def parse_drive(key: str, text: str) -> ParsedDrive:
    """Parse the value of a drive line (``scsi0``, ``local:100/x.qcow2,cache=none``).
    Raises DriveError carrying every problem of the string."""
    propstring.check_length(key, text)
    bus, _ = _bus_of(key)
    return _validated(key, propstring.parse_property_string(bus.schema, text))


def make_drive(key: str, values: Mapping[str, object]) -> ParsedDrive:
    """Build a drive from typed values, running every rule of :func:`parse_drive`
    (sizes in bytes; legacy ``bps*`` values are converted as when parsed)."""
    bus, _ = _bus_of(key)
    return _validated(key, propstring.check_values(bus.schema, values))


def print_drive(drive: Drive) -> str:
    """The canonical string of a drive (qemu-server's print_drive)."""
    return propstring.print_property_string(schema_of(drive.key), drive.values)


def _validated(key: str, checked: Checked) -> ParsedDrive:
    bus, index = _bus_of(key)
    _convert_legacy_bps(checked)
    _refuse_rates_below_one_byte(checked)
    propstring.check_rules(bus.schema.rules, checked)
    if checked.problems:
        raise DriveError(key, checked.problems)
    order = propstring.canonical_order(bus.schema, checked.values)
    values = MappingProxyType({name: checked.values[name] for name in order})
    drive = Drive(key, bus.name, index, values)
    return ParsedDrive(drive, tuple(_warnings(drive)))


def _convert_legacy_bps(checked: Checked) -> None:
    """qemu-server reads the legacy bytes/s limits as MB/s, rounded to 3 decimals."""
    for direction in _DIRECTIONS:
        legacy, current = f"bps{direction}", f"mbps{direction}"
        if legacy in checked.invalid:
            checked.invalid.add(current)
        if legacy not in checked.values:
            continue
        bps = checked.values.pop(legacy)
        if current in checked.values or current in checked.invalid:
            checked.add(legacy, f"both {legacy} and {current} specified")
            checked.invalid.add(current)
        else:
            checked.values[current] = round(float(bps) / MIB, 3)


def _refuse_rates_below_one_byte(checked: Checked) -> None:
    """A rate above 0 that QEMU would get as 0 bytes/s would silently be no limit at all."""
    for name, value in list(checked.values.items()):
        if name.startswith("mbps") and value and qemu_throttle_value(name, value) == 0:
            del checked.values[name]
            checked.add(name, f"value must be 0 (no limit) or at least {1 / MIB!r} (1 byte/s): "
                              f"QEMU counts whole bytes/s")


def _warnings(drive: Drive) -> Iterator[str]:
    fmt = drive.known_format
    if fmt is not None:
        source = "" if "format" in drive.values else " (from the file name)"
        yield from ignored_qcow2_keys(drive.key, drive.values, fmt, source)

"""The VM options qdisk knows besides drives: their schemas (qemu-server's), the checks of
``create``/``set``, and the typed view the QEMU command is built from.

Drives have their own language (:mod:`qdisk.config.drive`); everything else of a VM config is
one of :data:`OPTION_SCHEMAS` (a property string, most of them a single value) or the
free-text description. The command builder reads the config through :func:`read_options`,
so a value means the same to ``vm set`` and to ``vm start``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from qdisk.config import propstring
from qdisk.config.drive import is_drive_key
from qdisk.config.propstring import Property, Schema
from qdisk.errors import InvalidInputError

_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_DNS_NAME = rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*"
# qemu-server's machine types for x86 (pve-qemu-machine); group 1 is upstream QEMU's name.
_MACHINE = (r"(pc|pc(?:-i440fx)?-\d+(?:\.\d+)+|q35|pc-q35-\d+(?:\.\d+)+)"
            r"(?:\+pve\d+)?(?:\.pxe)?")
_MACHINE_RE = re.compile(_MACHINE)
_BOOT_DEVICE = r"(?:(?:ide|sata|scsi|virtio|net|hostpci|usb)\d+|efidisk0|tpmstate0)"
_TAG = r"[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*"
_OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
            "l24", "l26", "solaris")
_SCSI_HARDWARE = ("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas",
                  "pvscsi")
MAX_DESCRIPTION_LENGTH = 8192
DEFAULT_MEMORY_MIB = 512
DEFAULT_SCSI_HARDWARE = "lsi"
# qemu-server's legacy boot order: disk, cdrom, network.
DEFAULT_LEGACY_BOOT = "cdn"


class InvalidOptionError(InvalidInputError):
    """Values of VM options are invalid; one line per problem, each naming the key
    (``memory: ...``, ``boot.order: ...``)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _check_boot_disk(text: str) -> str | None:
    bootable = is_drive_key(text) and not text.startswith(("unused", "efidisk", "tpmstate"))
    return None if bootable else f"invalid drive name '{text}'"


def _single(key: str, prop: Property) -> Schema:
    """A schema whose only property is ``key``, given bare: ``memory: 512``."""
    return Schema({key: dataclasses.replace(prop, default_key=True, optional=False)})


OPTION_SCHEMAS: Mapping[str, Schema] = {
    "name": _single("name", propstring.string(pattern=_DNS_NAME, max_length=128)),
    "memory": _single("memory", propstring.integer(minimum=16)),
    "cores": _single("cores", propstring.integer(minimum=1)),
    "sockets": _single("sockets", propstring.integer(minimum=1)),
    # qemu-server's machine property string: the type, bare or as type=, and its flags.
    "machine": Schema({
        "machine": propstring.string(pattern=_MACHINE, max_length=40, default_key=True),
        "viommu": propstring.choice("intel", "virtio"),
        "enable-s3": propstring.boolean(),
        "enable-s4": propstring.boolean(),
    }, aliases={"type": "machine"}),
    "scsihw": _single("scsihw", propstring.choice(*_SCSI_HARDWARE)),
    "boot": Schema({
        "legacy": propstring.string(pattern=r"[acdn]{1,4}", default_key=True),
        "order": propstring.string(pattern=rf"{_BOOT_DEVICE}(?:;{_BOOT_DEVICE})*"),
    }),
    "bootdisk": _single("bootdisk", propstring.string(format=propstring.StringFormat(
        "pve-qm-bootdisk", _check_boot_disk))),
    "ostype": _single("ostype", propstring.choice(*_OSTYPES)),
    "onboot": _single("onboot", propstring.boolean()),
    "kvm": _single("kvm", propstring.boolean()),
    "tags": _single("tags", propstring.string(pattern=rf"{_TAG}(?:;{_TAG})*")),
}
# qemu-server accepts an empty ``boot:`` (a property string without properties): no
# device gets a boot index.
_MAY_BE_EMPTY = frozenset({"boot"})
# Free text: not a property string (commas and line breaks are allowed).
DESCRIPTION_KEY = "description"


def known_key(key: str) -> bool:
    return key in OPTION_SCHEMAS or key == DESCRIPTION_KEY or is_drive_key(key)


def _checked(key: str, text: str) -> propstring.Checked:
    checked = propstring.parse_property_string(OPTION_SCHEMAS[key], text)
    problems = [f"{key}: {problem.message}" if problem.property in (key, None)
                else f"{key}.{problem.property}: {problem.message}" for problem in checked.problems]
    if not problems and not checked.values and key not in _MAY_BE_EMPTY:
        problems.append(f"{key}: value must not be empty")
    if problems:
        raise InvalidOptionError(problems)
    return checked


def canonical_option(key: str, text: str) -> str:
    """The value of a non-drive key as it is stored (booleans ``1``/``0``, ``tags`` joined
    with ``;``); raises InvalidOptionError."""
    if key == DESCRIPTION_KEY:
        if len(text) > MAX_DESCRIPTION_LENGTH:
            raise InvalidOptionError([f"{key}: value may only be {MAX_DESCRIPTION_LENGTH} "
                                      f"characters long"])
        return text
    if key == "tags":
        # PVE accepts ';', ',' and blanks between tags and stores ';'.
        text = ";".join(part for part in re.split(r"[;,\s]+", text) if part)
    return propstring.print_property_string(OPTION_SCHEMAS[key], _checked(key, text).values)


# --- the typed view a QEMU command is built from --------------------------------------------


@dataclass(frozen=True)
class BootOrder:
    """``boot:``: an explicit device order (``order=scsi0;net0``), else legacy letters."""

    order: tuple[str, ...] | None = None
    legacy: str = DEFAULT_LEGACY_BOOT


@dataclass(frozen=True)
class VmOptions:
    """The options of a config's current values that shape its QEMU command."""

    name: str | None = None
    memory_mib: int = DEFAULT_MEMORY_MIB
    cores: int = 1
    sockets: int = 1
    machine: str = "pc"           # upstream QEMU's machine type (no +pveN, no .pxe)
    scsihw: str = DEFAULT_SCSI_HARDWARE
    boot: BootOrder = BootOrder()
    bootdisk: str | None = None
    kvm: bool = True
    template: bool = False


def _value(values: Mapping[str, str], key: str) -> propstring.Value | None:
    text = values.get(key)
    return None if text is None else _checked(key, text).values[key]


def read_options(values: Mapping[str, str]) -> VmOptions:
    """The typed options of ``values`` (a config section); raises InvalidOptionError naming
    every invalid key."""
    problems: list[str] = []
    fields: dict[str, object] = {}
    for key, field_name in (("name", "name"), ("memory", "memory_mib"), ("cores", "cores"),
                            ("sockets", "sockets"), ("scsihw", "scsihw"),
                            ("bootdisk", "bootdisk"), ("kvm", "kvm")):
        try:
            value = _value(values, key)
        except InvalidOptionError as error:
            problems += error.lines
            continue
        if value is not None:
            fields[field_name] = value
    try:
        fields["boot"] = _boot(values.get("boot"))
        machine = values.get("machine")
        if machine is not None:
            machine_type = _checked("machine", machine).values.get("machine")
            if machine_type is not None:
                fields["machine"] = upstream_machine(str(machine_type))
    except InvalidOptionError as error:
        problems += error.lines
    # ``template`` is set by qemu-server's `qm template`, never by `set`: read leniently.
    fields["template"] = propstring.parse_boolean(values.get("template", "0").strip()) is True
    if problems:
        raise InvalidOptionError(problems)
    return VmOptions(**fields)  # type: ignore[arg-type]


def _boot(text: str | None) -> BootOrder:
    if text is None:
        return BootOrder()
    values = _checked("boot", text).values
    order = values.get("order")
    if order is not None:
        return BootOrder(order=tuple(key for key in str(order).split(";") if key))
    if not values:
        return BootOrder(order=())  # qemu-server's device_bootorder of an empty boot: none
    return BootOrder(legacy=str(values.get("legacy", DEFAULT_LEGACY_BOOT)))


def upstream_machine(text: str) -> str:
    """The machine type as upstream QEMU names it (``pc-i440fx-9.2+pve0`` -> ``pc-i440fx-9.2``)."""
    match = _MACHINE_RE.fullmatch(text)
    if match is None:
        raise InvalidOptionError([f"machine: unsupported machine type '{text}'"])
    return match.group(1)


def accelerator(options: VmOptions, requested: str | None = None, *,
                kvm_usable: Callable[[], bool] | None = None) -> str | None:
    """The accelerator a VM runs with: the requested one; ``kvm: 0`` means TCG (as
    qemu-server); else KVM when ``kvm_usable()`` says so, TCG when it does not. Without a
    probe, None: QEMU's own default (what ``showcmd`` prints)."""
    if requested:
        return requested
    if not options.kvm:
        return "tcg"
    if kvm_usable is None:
        return None
    return "kvm" if kvm_usable() else "tcg"

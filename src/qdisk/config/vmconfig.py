"""The VM configuration file format of Proxmox VE (``qemu-server/<vmid>.conf``), parsed and
printed; where a home keeps the files, and how they are read, locked and written, is
:mod:`qdisk.vm.store`.

::

    #description line (url-encoded)
    memory: 2048
    scsi0: local:100/vm-100-disk-0.qcow2,cache=none

    [PENDING]
    memory: 4096
    delete: serial0

    [snap1]
    memory: 1024

Parsed as qemu-server's parse_vm_config does: ``#`` lines are the description of
the section they are in, values are kept exactly as written (drive strings too, and
keys qdisk does not know), ``cdrom:`` is read as ``ide2:``, and a line that is not
``key: value`` is dropped with a warning. Printed as write_vm_config does: the
description, then the keys sorted, then ``[PENDING]``, special sections and
snapshots (sorted), so a file PVE wrote reads and prints back unchanged.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from qdisk.config.drive import drive_keys
from qdisk.config.propstring import split_list
from qdisk.config.text import BLANKS
from qdisk.errors import InvalidInputError

# A line's key; qemu-server's ^([a-z][a-z_]*\d*):\s*(.+?)\s*$ is split in two (key, then
# the rest stripped), since that regex takes quadratic time on a run of blanks.
_KEY_RE = re.compile(r"([a-z][a-z_]*\d*):", re.ASCII)
_DESCRIPTION_KEY = "description:"
_SNAPSHOT_RE = re.compile(r"\[([a-z][a-z0-9_\-]+)\]\s*", re.IGNORECASE | re.ASCII)
_SPECIAL_RE = re.compile(r"\[special:([a-z]+)\]\s*", re.IGNORECASE | re.ASCII)
_PENDING_RE = re.compile(r"\[PENDING\]\s*", re.IGNORECASE)
# PVE::Tools::encode_text: control and non-ASCII characters, and ':', are %-escaped.
_UNSAFE_DESCRIPTION_RE = re.compile(r"[^\x20-\x39\x3b-\x7e]")
# PVE's vmid range (pve-vmid).
MIN_VMID = 100
MAX_VMID = 999_999_999
_VMID_RE = re.compile(r"[1-9][0-9]{2,8}")
# JSONSchema.pm's integer: an optional minus, then digits (ASCII only).
_INTEGER_RE = re.compile(r"-?[0-9]+")


class VmConfigError(InvalidInputError):
    """A VM config cannot be found or read; names the VM."""


@dataclass
class Section:
    """One part of a config: its ``key: value`` lines (raw strings) and its description."""

    values: dict[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass
class VmConfig:
    """A whole VM config. ``pending.values`` may hold ``delete`` (see :func:`pending_delete_flags`)."""

    vmid: int
    current: Section = field(default_factory=Section)
    pending: Section = field(default_factory=Section)
    special: dict[str, Section] = field(default_factory=dict)
    snapshots: dict[str, Section] = field(default_factory=dict)
    # Lines dropped while parsing, as qemu-server warns about them (never printed back).
    warnings: list[str] = field(default_factory=list)
    # SHA-1 of the file it was read from (Proxmox VE's ``digest``); None when not read.
    digest: str | None = None

    def merged(self) -> dict[str, str]:
        """The values with pending changes applied (what ``qm config`` shows), the
        description as the ``description`` key."""
        deleted = pending_delete_flags(self)
        values = {key: value for key, value in section_values(self.current).items()
                  if key not in deleted}
        values.update((key, value) for key, value in section_values(self.pending).items()
                      if key != "delete")
        return values


def check_vmid(vmid: int) -> int:
    if not MIN_VMID <= vmid <= MAX_VMID:
        raise VmConfigError(f"invalid VM id {vmid} (must be {MIN_VMID} to {MAX_VMID})")
    return vmid


def is_vmid(text: str) -> bool:
    """Whether ``text`` is a VM id as Proxmox VE writes one (config file names too)."""
    return _VMID_RE.fullmatch(text) is not None


def parse_vmid(text: str) -> int:
    """A VM id as Proxmox VE's API takes it (an integer in the ``pve-vmid`` format: digits,
    no sign, no leading zero, 100 to 999999999); ``100.0``, ``+100``, ``1_00``, ``0100``
    or ``100 `` are refused, as ``int()`` would take some of them."""
    if not _INTEGER_RE.fullmatch(text):
        raise VmConfigError(f"type check ('integer') failed - got '{text}'")
    if is_vmid(text):
        return int(text)
    if len(text) > len(str(MAX_VMID)) + 1 or not MIN_VMID <= int(text) <= MAX_VMID:
        raise VmConfigError(f"invalid VM id {text} (must be {MIN_VMID} to {MAX_VMID})")
    raise VmConfigError(f"value does not look like a valid VM ID - got '{text}'")


def parse_vm_config(text: str, vmid: int) -> VmConfig:
    config = VmConfig(vmid)
    section = config.current
    section_name = ""
    description: list[str] = []

    def finish_description() -> None:
        if description:
            section.description = "\n".join(description).rstrip()
            description.clear()

    for line in text.split("\n"):
        if not line.strip(BLANKS):
            continue
        header = _section_header(config, line)
        if header is not None:
            finish_description()
            section_name, section = header
            continue
        if line.startswith("#"):
            description.append(decode_text(line[1:]))
            continue
        described = line.removeprefix(_DESCRIPTION_KEY).strip(BLANKS) \
            if line.startswith(_DESCRIPTION_KEY) else ""
        if described:
            description.append(decode_text(described))
            continue
        pair = _key_value(line)
        if pair is None:
            config.warnings.append(f"vm {vmid} - unable to parse config: {line}")
            continue
        key, value = pair
        if key == "delete" and section_name != "pending":
            config.warnings.append(f"vm {vmid} - property 'delete' is only allowed in [PENDING]")
            continue
        section.values["ide2" if key == "cdrom" else key] = value
    finish_description()
    return config


def _key_value(line: str) -> tuple[str, str] | None:
    """``(key, value)`` of a ``key: value`` line, as qemu-server's regex reads it: the
    value without its surrounding blanks, or, when it is all blanks, its last one."""
    key = _KEY_RE.match(line)
    if key is None:
        return None
    rest = line[key.end():]
    value = rest.strip(BLANKS) or rest[-1:]
    return (key.group(1), value) if value else None


def _section_header(config: VmConfig, line: str) -> tuple[str, Section] | None:
    if _PENDING_RE.fullmatch(line):
        return "pending", config.pending
    special = _SPECIAL_RE.fullmatch(line)
    if special:
        return "special", config.special.setdefault(special.group(1), Section())
    snapshot = _SNAPSHOT_RE.fullmatch(line)
    if snapshot:
        return "snapshot", config.snapshots.setdefault(snapshot.group(1), Section())
    return None


def print_vm_config(config: VmConfig) -> str:
    text = _print_section(config.current)
    if has_pending(config):
        text += "\n[PENDING]\n" + _print_section(config.pending)
    for name in sorted(config.special):
        text += f"\n[special:{name}]\n" + _print_section(config.special[name])
    for name in sorted(config.snapshots):
        text += f"\n[{name}]\n" + _print_section(config.snapshots[name])
    return text


def _print_section(section: Section) -> str:
    lines = []
    if section.description is not None:
        lines += ["#" + encode_text(line) for line in section.description.split("\n")]
    lines += [f"{key}: {section.values[key]}" for key in sorted(section.values)]
    return "".join(line + "\n" for line in lines)


def encode_text(text: str) -> str:
    # surrogateescape: bytes of a command-line argument that are not UTF-8 keep their value.
    return _UNSAFE_DESCRIPTION_RE.sub(
        lambda match: "".join(f"%{byte:02X}" for byte in match.group().encode(errors="surrogateescape")),
        text)


def decode_text(text: str) -> str:
    return urllib.parse.unquote(text, errors="replace")


def drive_items(values: dict[str, str]) -> list[tuple[str, str]]:
    """The drive lines among ``values`` (``unused*`` included), in qemu-server's order."""
    return [(key, values[key]) for key in drive_keys() if key in values]


# --- pending changes ---------------------------------------------------------------------


def pending_delete_flags(config: VmConfig) -> dict[str, bool]:
    """Keys ``[PENDING]`` deletes -> whether the deletion is forced (``!key``)."""
    text = config.pending.values.get("delete", "")
    return {entry.lstrip("!"): entry.startswith("!")
            for entry in split_list(text) if entry.lstrip("!")}


def _write_pending_deletions(config: VmConfig, flags: dict[str, bool]) -> None:
    if flags:
        config.pending.values["delete"] = ",".join(("!" if force else "") + key
                                                   for key, force in flags.items())
    else:
        config.pending.values.pop("delete", None)


def set_pending(config: VmConfig, key: str, value: str) -> None:
    """qemu-server's ``pending->{key} = value`` and remove_from_pending_delete."""
    set_value(config.pending, key, value)
    remove_pending_delete(config, key)


def remove_pending_delete(config: VmConfig, key: str) -> None:
    flags = pending_delete_flags(config)
    if flags.pop(key, None) is not None:
        _write_pending_deletions(config, flags)


def add_pending_delete(config: VmConfig, key: str, *, force: bool = False) -> None:
    """qemu-server's add_to_pending_delete: a pending value of the key is dropped."""
    delete_value(config.pending, key)
    flags = pending_delete_flags(config)
    flags[key] = force or flags.get(key, False)
    _write_pending_deletions(config, flags)


def section_values(section: Section) -> dict[str, str]:
    """The section's values with its description as the ``description`` key (how the
    commands and ``qm config`` treat it), first."""
    described = {} if section.description is None else {"description": section.description}
    return {**described, **section.values}


def set_value(section: Section, key: str, value: str) -> None:
    if key == "description":
        section.description = value
    else:
        section.values[key] = value


def delete_value(section: Section, key: str) -> None:
    if key == "description":
        section.description = None
    else:
        section.values.pop(key, None)


def has_pending(config: VmConfig) -> bool:
    return bool(config.pending.values) or config.pending.description is not None

"""The whole QEMU command of a VM, as qemu-server's config_to_command builds it.

Only what a VM needs to run is rendered (``name``, ``memory``, ``cores``, ``sockets``,
``machine``, ``scsihw``, ``boot``/``bootdisk``, ``template``, ``kvm`` and every drive
of the ide, sata, scsi and virtio buses); other keys stay in the config. The disk
arguments are qemu-server's: ``-blockdev`` with a throttle group ``-object`` for
machine versions >= 10.0, else a legacy ``-drive`` (see :mod:`~qdisk.qemu.nodes`).

Where qemu-server relies on Proxmox's own QEMU build, upstream QEMU gets the
equivalent: no ``-id``, machine types without ``+pveN``, the PCI bridges of q35's
``pve-q35-4.0.cfg`` as devices instead of ``-readconfig``; the QMP socket, pid file and
VNC socket live in ``QDISK_HOME/run``. Devices get qemu-server's PCI addresses, and
every bridge their buses need (an lsi controller's third, ``virtio6`` and up, ...).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from qdisk.config import vmconfig
from qdisk.config.drive import Drive, parse_drive
from qdisk.config.vmconfig import VmConfig
from qdisk.config.vmoptions import VmOptions, accelerator, read_options
from qdisk.errors import InvalidInputError
from qdisk.qemu.blockdev import to_json
from qdisk.qemu.drivestr import drive_string
from qdisk.qemu.nodes import DriveGraph, drive_graph
from qdisk.qemu.rules import cache_mode, template_read_only
from qdisk.qemuopts import escape
from qdisk.settings import Settings
from qdisk.storage import StorageConfig

Syntax = Literal["blockdev", "drive"]
Version = tuple[int, ...]

BLOCKDEV_MIN_VERSION = (10, 0)
# Buses qemu-server renders as -device; efidisk0/tpmstate0 need OVMF/swtpm, unused* no device.
COMMAND_BUSES = ("ide", "scsi", "virtio", "sata")
MAX_SATA_DISKS = 6
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
# qemu-server's PCI address table (PCI.pm's get_pci_addr_map), the entries of the devices
# qdisk renders: device -> (bus, slot). Bus N is the bridge pci.N; pci.0 is i440fx's root
# bus, on q35 a bridge behind the DMI bridge (pve-q35-4.0.cfg, see _Q35_CONFIG_BRIDGES).
_PCI_SLOTS: dict[str, tuple[int, int]] = {
    "vga": (0, 2), "scsihw0": (0, 5), "pci.3": (0, 5), "scsihw1": (0, 6), "ahci0": (0, 7),
    **{f"virtio{index}": (0, 10 + index) for index in range(6)},
    "pci.1": (0, 30), "pci.2": (0, 31), "pci.4": (1, 28),
    **{f"virtio{index}": (2, index - 5) for index in range(6, 16)},
    **{f"virtioscsi{index}": (3, index + 1) for index in range(31)},
    **{f"scsihw{index}": (4, index - 1) for index in range(2, 5)},
}
# q35's first display sits on the root complex (PCI.pm's print_pcie_addr).
_Q35_VGA_SLOT = 1
# pve-q35-4.0.cfg, which qemu-server reads with -readconfig on q35: the DMI bridge and
# pci.0 to pci.3 behind it (pci.N at slot N + 1, chassis N + 1). qemu-server adds only the
# bridges beyond them (pci.4) itself.
_Q35_CONFIG_BRIDGES = 4
# i440fx machines from 2.3 on always get pci.1 and pci.2.
_DEFAULT_BRIDGES_VERSION = (2, 3)
# Characters String::ShellQuote leaves unquoted.
_SHELL_SAFE_RE = re.compile(r"[\w!%+,\-./:=@^]+", re.ASCII)


class CommandError(InvalidInputError):
    """The VM's config cannot become a QEMU command; names the VM or drive and the problem."""


@dataclass(frozen=True)
class VmCommand:
    """A VM's QEMU command (``argv``), the syntax it was built for, the graph of every
    drive (for live changes) and the warnings for the user."""

    argv: list[str]
    syntax: Syntax
    graphs: dict[str, DriveGraph] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def text(self, *, pretty: bool = False) -> str:
        return format_command(self.argv, pretty=pretty)


def parse_version(text: str) -> Version:
    match = _VERSION_RE.fullmatch(text.strip())
    if match is None:
        raise CommandError(f"invalid QEMU version '{text}' (expected X.Y or X.Y.Z)")
    return tuple(int(part) for part in match.groups() if part is not None)


def build_command(config: VmConfig, storage_config: StorageConfig, settings: Settings, *,
                  qemu_version: Callable[[], Version], syntax: Syntax | None = None,
                  accel: str | None = None) -> VmCommand:
    """The command of a parsed config (current values; pending changes are not applied).

    The machine version is the config's pinned one, else ``qemu_version()``; >= 10.0 means
    ``-blockdev``. ``syntax`` overrides the rule. ``accel`` is added to ``-machine``
    (``kvm: 0`` in the config means ``tcg``, as qemu-server).
    """
    options = read_options(config.current.values)
    # Asked at most once: for the syntax, and for the node options of the QEMU that runs it.
    qemu_version = functools.cache(qemu_version)
    version = _pinned_version(options.machine)
    if version is None and syntax is None:
        version = qemu_version()
    chosen: Syntax = syntax or ("blockdev" if version is not None
                                and version[:2] >= BLOCKDEV_MIN_VERSION else "drive")
    builder = _Builder(config, options, storage_config, settings, chosen, qemu_version)
    argv = builder.argv(accelerator(options, accel))
    return VmCommand(argv, chosen, builder.graphs, tuple(builder.warnings))


def _pinned_version(machine: str) -> Version | None:
    match = re.search(r"-(\d+)\.(\d+)", machine)
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_q35(machine: str) -> bool:
    return "q35" in machine


class _Builder:
    """One command under construction: qemu-server's $cmd (options, objects) and $devices."""

    def __init__(self, config: VmConfig, options: VmOptions, storage_config: StorageConfig,
                 settings: Settings, syntax: Syntax, qemu_version: Callable[[], Version]) -> None:
        self.config = config
        # The QEMU that runs the VM decides which node options exist (-drive refuses the
        # volume chains that need one).
        self.qemu_version = qemu_version if syntax == "blockdev" else None
        self.options = options
        self.storage = storage_config
        self.settings = settings
        self.syntax = syntax
        self.q35 = is_q35(options.machine)
        self.template = options.template
        self.scsihw = options.scsihw
        self.objects: list[str] = []
        self.devices: list[str] = []
        self.graphs: dict[str, DriveGraph] = {}
        self.warnings: list[str] = list(config.warnings)
        self._controllers: set[str] = set()
        # The PCI buses (pci.N) the devices so far sit on: their bridges are added.
        self._buses: set[int] = set()

    def argv(self, accel: str | None) -> list[str]:
        vmid = self.config.vmid
        files = self.settings.layout.run_files(vmid)
        drives = self._drives()
        boot = _boot_order(self.options, drives)
        for drive in drives:
            self._add_drive(drive, boot.get(drive.key))
        sockets, cores = self.options.sockets, self.options.cores
        vcpus = sockets * cores
        name = self.options.name or f"vm{vmid}"
        machine = [f"type={self.options.machine}"]
        if accel is not None:
            machine.insert(0, f"accel={accel}")
        return [
            self.settings.tools.qemu_system,
            "-name", f"{escape(name)},debug-threads=on",
            "-no-shutdown",
            "-chardev", f"socket,id=qmp,path={escape(str(files.qmp))},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-pidfile", str(files.pid),
            "-daemonize",
            "-smp", f"{vcpus},sockets={sockets},cores={cores},maxcpus={vcpus}",
            "-nodefaults",
            "-boot", "menu=on,strict=on,reboot-timeout=1000",
            "-vnc", f"unix:{escape(str(files.vnc))},password=on",
            "-m", str(self.options.memory_mib),
            *self.objects,
            *self._bridges(),
            "-device", f"VGA,id=vga{self._pci_address('vga')}",
            *self.devices,
            "-machine", ",".join(machine),
            # qemu-server: "needed to workaround base volumes being read-only" (a template's
            # IDE/SATA disks cannot be; QEMU writes to temporary overlays of -drive disks).
            *(["-snapshot"] if self.template else []),
        ]

    def _drives(self) -> list[Drive]:
        drives = []
        for key, text in vmconfig.drive_items(self.config.current.values):
            bus = re.sub(r"\d+$", "", key)
            if bus == "unused":
                continue
            if bus not in COMMAND_BUSES:
                self.warnings.append(f"{key}: not supported by qdisk's command: left out")
                continue
            drives.append(parse_drive(key, text).drive)
        return drives

    def _add_drive(self, drive: Drive, bootindex: int | None) -> None:
        self._add_controller(drive)
        graph = drive_graph(drive, self.storage, template=self.template, tools=self.settings.tools,
                            qemu_version=self.qemu_version)
        self.graphs[drive.key] = graph
        self.warnings.extend(graph.warnings)
        if self.syntax == "blockdev":
            if drive.get("snapshot") is True:
                raise CommandError(f"{drive.key}: 'snapshot' is not supported with -blockdev")
            self.objects += ["-object", to_json(graph.throttle_group)]
            if graph.top is not None:
                self.devices += ["-blockdev", to_json(graph.top)]
        else:
            read_only = template_read_only(drive, template=self.template)
            self.devices += ["-drive", drive_string(graph, template_read_only=read_only)]
        self.devices += ["-device", self._front_end(graph, bootindex)]

    def _add_controller(self, drive: Drive) -> None:
        if drive.interface == "virtio" and drive.get("iothread") is True:
            self.objects += ["-object", f"iothread,id=iothread-{drive.key}"]
        if drive.interface == "scsi":
            controller, _ = self._scsi_slot(drive)
            if controller in self._controllers:
                return
            self._controllers.add(controller)
            device = ("virtio-scsi-pci" if self.scsihw == "virtio-scsi-single" else self.scsihw)
            extra = ""
            if self.scsihw == "virtio-scsi-single" and drive.get("iothread") is True:
                self.objects += ["-object", f"iothread,id=iothread-{controller}"]
                extra += f",iothread=iothread-{controller}"
            elif drive.get("iothread") is True:
                self.warnings.append(f"{drive.key}: iothread is only valid with virtio disk or "
                                     "virtio-scsi-single controller, ignoring")
            if self.scsihw == "virtio-scsi-single" and drive.get("queues") is not None:
                extra += f",num_queues={drive.get('queues')}"
            self.devices += ["-device", f"{device},id={controller}{self._pci_address(controller)}"
                                        f"{extra}"]
        elif drive.interface == "sata":
            controller = f"ahci{drive.index // MAX_SATA_DISKS}"
            if controller not in self._controllers:
                self._controllers.add(controller)
                self.devices += ["-device", f"ahci,id={controller},multifunction=on"
                                            f"{self._pci_address(controller)}"]

    def _scsi_slot(self, drive: Drive) -> tuple[str, int]:
        """qemu-server's scsihw_infos: (controller id, unit); an lsi controller has 7 units,
        so scsi7 needs a second controller and scsi14 a third (on the bridge pci.4)."""
        if self.scsihw == "virtio-scsi-single":
            return f"virtioscsi{drive.index}", 0
        per_controller = 7 if self.scsihw.startswith("lsi") else 256
        return f"scsihw{drive.index // per_controller}", drive.index % per_controller

    def _front_end(self, graph: DriveGraph, bootindex: int | None) -> str:
        """qemu-server's print_drivedevice_full."""
        drive = graph.disk.drive
        attach = f"drive=drive-{drive.key}," if graph.top is not None or self.syntax == "drive" \
            else ""
        kind = "cd" if drive.is_cdrom else "hd"
        if drive.interface == "virtio":
            device = f"virtio-blk-pci,{attach}id={drive.key}{self._pci_address(drive.key)}"
            if drive.get("iothread") is True:
                device += f",iothread=iothread-{drive.key}"
        elif drive.interface == "scsi":
            controller, unit = self._scsi_slot(drive)
            kind = "block" if drive.get("scsiblock") is True else kind
            if self.scsihw.startswith("lsi") or self.scsihw == "pvscsi":
                device = f"scsi-{kind},bus={controller}.0,scsi-id={unit}"
            else:
                device = f"scsi-{kind},bus={controller}.0,channel=0,scsi-id=0,lun={drive.index}"
            device += f",{attach}id={drive.key}"
            if drive.get("ssd") is True and kind != "cd":
                device += ",rotation_rate=1"
            device += _optional(drive, "wwn")
            if kind != "block":
                device += _optional(drive, "vendor") + _optional(drive, "product")
        else:
            device = f"ide-{kind},bus={self._ide_bus(drive)},{attach}id={drive.key}"
            if kind == "hd":
                device += _optional(drive, "model", url_encoded=True)
                device += ",rotation_rate=1" if drive.get("ssd") is True else ""
            device += _optional(drive, "wwn")
        if bootindex is not None:
            device += f",bootindex={bootindex}"
        device += _optional(drive, "serial", url_encoded=True)
        if self.syntax == "blockdev":
            device += _optional(drive, "rerror") + _optional(drive, "werror")
            if not drive.is_cdrom:
                device += f",write-cache={'on' if cache_mode(drive).write_cache else 'off'}"
        return device

    def _ide_bus(self, drive: Drive) -> str:
        if drive.interface == "sata":
            return f"ahci{drive.index // MAX_SATA_DISKS}.{drive.index % MAX_SATA_DISKS}"
        controller, unit = divmod(drive.index, 2)
        if self.q35:
            # q35's controllers have one unit each; qemu-server moves odd indexes up by 2.
            controller, unit = controller + 2 * unit, 0
        return f"ide.{controller},unit={unit}"

    def _pci_address(self, device: str) -> str:
        """qemu-server's print_pci_addr (print_pcie_addr for q35's display); the bus's bridge
        is added to the command (its $bridges)."""
        bus, slot = _PCI_SLOTS[device]
        if self.q35 and device == "vga":
            return f",bus=pcie.0,addr={_Q35_VGA_SLOT:#x}"
        self._buses.add(bus)
        return f",bus=pci.{bus},addr={slot:#x}"

    def _bridges(self) -> list[str]:
        """qemu-server's bridges: on i440fx pci.1 and pci.2 (machines from 2.3 on), pci.3
        for virtio-scsi-single, and the bridge of every bus a device sits on; on q35 the
        DMI bridge and pci.0 to pci.3 of its pve-q35-4.0.cfg, then the bridges beyond."""
        bridges = set(self._buses)
        arguments: list[str] = []
        if self.q35:
            arguments += ["-device", "i82801b11-bridge,id=pcidmi,bus=pcie.0,addr=0x1e"]
            for number in range(_Q35_CONFIG_BRIDGES):
                arguments += ["-device", f"pci-bridge,id=pci.{number},chassis_nr={number + 1},"
                                         f"bus=pcidmi,addr={number + 1:#x}"]
            bridges = {number for number in bridges if number >= _Q35_CONFIG_BRIDGES}
        else:
            version = _pinned_version(self.options.machine)
            if version is None or version >= _DEFAULT_BRIDGES_VERSION:
                bridges |= {1, 2}
            if self.scsihw == "virtio-scsi-single":
                bridges.add(3)
        for number in sorted(bridges - {0}):
            arguments += ["-device", f"pci-bridge,id=pci.{number},chassis_nr={number}"
                                     f"{self._pci_address(f'pci.{number}')}"]
        return arguments


def _optional(drive: Drive, name: str, *, url_encoded: bool = False) -> str:
    value = drive.get(name)
    if value is None:
        return ""
    text = str(value)
    if url_encoded:
        text = unquote(text)
    return f",{name}={escape(text)}"


def _boot_order(options: VmOptions, drives: list[Drive]) -> dict[str, int]:
    """qemu-server's device_bootorder: ``order=a;b`` -> 100, 101, ...; else the legacy
    letters (``cdn``): the bootdisk gets c's index, cdroms d's (counting up)."""
    if options.boot.order is not None:
        return {key: 100 + position for position, key in enumerate(options.boot.order)}
    base = {letter: 100 * (position + 1) for position, letter in enumerate(options.boot.legacy)}
    result: dict[str, int] = {}
    for drive in drives:
        if drive.is_cdrom:
            if "d" in base:
                result[drive.key] = base["d"]
                base["d"] += 1
        elif "c" in base:
            if options.bootdisk == drive.key:
                result[drive.key] = base["c"]
            base["c"] += 1
    return result


# --- showing the command --------------------------------------------------------------


def shell_quote(argument: str) -> str:
    """One argument quoted as String::ShellQuote (qemu-server's cmd2string) quotes it:
    anything with ``=`` or a character outside ``[\\w!%+,-./:=@^]`` in single quotes."""
    if argument == "":
        return "''"
    if _SHELL_SAFE_RE.fullmatch(argument) and "=" not in argument:
        return argument
    quoted = argument.replace("'", "'\\''")
    # Runs of quotes read simpler as '"'''"' than as '\'''\'''\''.
    quoted = re.sub(r"((?:'\\''){2,})",
                    lambda match: "'\"" + "'" * (len(match.group(1)) // 4) + "\"'", quoted)
    quoted = f"'{quoted}'"
    quoted = quoted[2:] if quoted.startswith("''") else quoted
    return quoted[:-2] if quoted.endswith("''") else quoted


def format_command(argv: list[str], *, pretty: bool = False) -> str:
    """The command on one line, or (``pretty``, as ``qm showcmd --pretty``) each option with
    its values on a line of its own, lines joined with `` \\``."""
    quoted = [shell_quote(argument) for argument in argv]
    if not pretty:
        return " ".join(quoted)
    lines: list[list[str]] = []
    for text in quoted:
        # qm's `s/ -/ \\\n  -/g` at argument boundaries: a quoted '-x' value stays put.
        if text.startswith("-") or not lines:
            lines.append([text])
        else:
            lines[-1].append(text)
    return " \\\n  ".join(" ".join(line) for line in lines)

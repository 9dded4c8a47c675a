"""``qdisk pve audit``: every VM and disk of a node, the qcow2 cache each image has, what
it covers and costs, and what would cover it whole. Read-only, nothing is started, QEMU
is not asked: images are read with the native header reader, caches come from
:mod:`qdisk.cache`'s model of QEMU.

"Now" is what QEMU has: for a VM running on this node, what qdisk recorded applying to
its QEMU (QEMU's defaults where it applied nothing); for any other VM, what its next
start gives it (its stored settings, applied by the hookscript; QEMU's defaults
without). Each image of a chain has its own cache: the drive's explicit sizes apply to
the top image, the automatic size to every image, QEMU's defaults to the rest.

``--budget`` shares a memory budget among a node's readable qcow2 disks: full coverage
(every image of the chain at its automatic size) for as many disks as fit, the smallest
need first; the rest of the budget goes to the other disks in proportion to their
virtual size, as a ``qcow2-cache-size`` of their top image.

With the cluster's view (``--all-nodes``, the page), each VM also says where its settings
stand, from every node's agent's record (:func:`qdisk.pve.nodestatus.cluster_view`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qdisk import cache
from qdisk.cache import CacheOptions, EffectiveCache, QemuCacheError
from qdisk.config.drive import Drive, parse_drive
from qdisk.errors import DriveError, InvalidInputError, QdiskError
from qdisk.image.info import ImageInfo, read_chain
from qdisk.pve.apply import Record, read_record
from qdisk.pve.cachesettings import CacheSettings, print_settings_value, read_settings, with_settings
from qdisk.pve.host import HostVm, PveHost, PveRefusedError, is_disk
from qdisk.pve.nodestatus import SettingsState, cluster_view
from qdisk.qemu.nodes import Disk, format_node, resolve_disk
from qdisk.qemu.reopen import backing_chain
from qdisk.storage import StorageConfig
from qdisk.units import MIB

# The largest qcow2-cache-size the drive language takes (MiB).
MAX_CACHE_SIZE_MIB = 10240


@dataclass(frozen=True)
class LayerAudit:
    """One image of a disk's chain, top first: its facts, the cache it has now (QEMU
    options; empty: QEMU's defaults) with what that covers and costs, and its auto size."""

    image: ImageInfo
    options: Mapping[str, int]
    effective: EffectiveCache | None
    auto_size: int | None
    auto_memory: int

    @property
    def memory(self) -> int:
        return _memory(self.effective)

    @property
    def coverage(self) -> float | None:
        return cache.coverage_percent(self.effective) if self.effective else None

    def as_json(self) -> dict[str, Any]:
        effective = self.effective
        return {"filename": self.image.filename, "format": self.image.format,
                "virtual-size": self.image.virtual_size, "cluster-size": self.image.cluster_size,
                "extended-l2": self.image.extended_l2, "cache": dict(self.options),
                "l2-cache-size": effective.l2_cache_size if effective else None,
                "refcount-cache-size": effective.refcount_cache_size if effective else None,
                "coverage-percent": _rounded(self.coverage),
                # The L2 tables the image has: all an L2 cache can fill until more is written.
                "allocated-l2-size": self.image.allocated_l2_bytes, "auto-size": self.auto_size,
                "memory": self.memory, "auto-memory": self.auto_memory}


@dataclass(frozen=True)
class DiskAudit:
    """A disk of a VM; ``problem`` says why it could not be read from this node,
    ``settings_problem`` why QEMU would refuse its settings."""

    key: str
    volume: str
    storage: str | None
    format: str | None
    settings: str | None
    cache_source: str
    layers: tuple[LayerAudit, ...] = ()
    problem: str | None = None
    settings_problem: str | None = None

    @property
    def top(self) -> LayerAudit | None:
        return self.layers[0] if self.layers else None

    @property
    def is_qcow2(self) -> bool:
        return self.format == "qcow2" and self.problem is None and bool(self.layers)

    @property
    def memory(self) -> int:
        return sum(layer.memory for layer in self.layers)

    @property
    def auto_memory(self) -> int:
        return sum(layer.auto_memory for layer in self.layers)

    def as_json(self) -> dict[str, Any]:
        top = self.top
        return {"key": self.key, "volume": self.volume, "storage": self.storage,
                "format": self.format, "readable": self.problem is None, "reason": self.problem,
                "virtual-size": top.image.virtual_size if top else None,
                "cluster-size": top.image.cluster_size if top else None,
                "settings": self.settings, "settings-problem": self.settings_problem,
                "cache-source": self.cache_source,
                "coverage-percent": _rounded(top.coverage) if top else None,
                "layers": [layer.as_json() for layer in self.layers],
                "memory": self.memory, "auto-memory": self.auto_memory}


@dataclass(frozen=True)
class VmAudit:
    vmid: int
    node: str
    name: str | None
    running: bool
    lock: str | None
    disks: tuple[DiskAudit, ...]
    problem: str | None = None

    @property
    def memory(self) -> int:
        return sum(disk.memory for disk in self.disks)

    @property
    def auto_memory(self) -> int:
        return sum(disk.auto_memory for disk in self.disks)

    def as_json(self) -> dict[str, Any]:
        return {"vmid": self.vmid, "node": self.node, "name": self.name, "running": self.running,
                "lock": self.lock, "problem": self.problem,
                "disks": [disk.as_json() for disk in self.disks],
                "memory": self.memory, "auto-memory": self.auto_memory}


@dataclass(frozen=True)
class BudgetEntry:
    """A disk's share of a budget: the setting that gives it, and what that covers and costs."""

    vmid: int
    key: str
    setting: str
    memory: int
    need: int
    coverage: float

    def as_json(self) -> dict[str, Any]:
        return {"vmid": self.vmid, "key": self.key, "setting": self.setting,
                "memory": self.memory, "need": self.need,
                "coverage-percent": _rounded(self.coverage)}


@dataclass(frozen=True)
class BudgetPlan:
    budget: int
    entries: tuple[BudgetEntry, ...]

    @property
    def memory(self) -> int:
        return sum(entry.memory for entry in self.entries)

    def as_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "memory": self.memory,
                "disks": [entry.as_json() for entry in self.entries]}


@dataclass(frozen=True)
class NodeAudit:
    """``states``: where each VM's settings stand in the cluster, when asked for."""

    node: str
    vms: tuple[VmAudit, ...]
    budget: BudgetPlan | None = None
    states: Mapping[int, SettingsState] = field(default_factory=dict)

    @property
    def memory(self) -> int:
        return sum(vm.memory for vm in self.vms)

    @property
    def auto_memory(self) -> int:
        return sum(vm.auto_memory for vm in self.vms)

    def as_json(self) -> dict[str, Any]:
        data = {"node": self.node, "vms": [self._vm_json(vm) for vm in self.vms],
                "memory": self.memory, "auto-memory": self.auto_memory}
        if self.budget is not None:
            data["budget"] = self.budget.as_json()
        return data

    def _vm_json(self, vm: VmAudit) -> dict[str, Any]:
        data = vm.as_json()
        if vm.vmid in self.states:
            data["settings-state"] = self.states[vm.vmid].as_json()
        return data


def _memory(effective: EffectiveCache | None) -> int:
    return effective.l2_cache_size + effective.refcount_cache_size if effective else 0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- auditing -----------------------------------------------------------------------------


def audit(host: PveHost, nodes: Sequence[str] | None = None, *, budget: int | None = None,
          visible: Callable[[int], bool] | None = None, states: bool = False) -> list[NodeAudit]:
    """The audit of ``nodes`` (default: this node), each with a budget plan if asked;
    ``visible``: only the VMs it accepts (a caller's, whose privileges allow no more);
    ``states``: with where each VM's settings stand in the cluster."""
    known = host.nodes()
    for node in nodes or ():
        if node not in known:
            raise PveRefusedError(f"node '{node}' does not exist (nodes: {', '.join(known)})")
    scan = _Scan(host, host.storage_config(), _vmids_with(host.paths.settings_dir, ".conf"),
                 _vmids_with(host.layout.run_dir, ".pid"))
    results = []
    for node in nodes or [host.node]:
        vms = tuple(_audit_vm(scan, node, vmid) for vmid in host.vmids(node)
                    if visible is None or visible(vmid))
        results.append(NodeAudit(node, vms, None if budget is None else plan_budget(vms, budget)))
    if not states:
        return results
    view = cluster_view(host, {vm.vmid: result.node for result in results for vm in result.vms})
    return [replace(result, states={vm.vmid: view[vm.vmid] for vm in result.vms})
            for result in results]


def audit_vm(host: PveHost, node: str, vmid: int) -> VmAudit:
    """The audit of VM ``vmid``, whose config is in ``node``'s directory."""
    scan = _Scan(host, host.storage_config(), frozenset({vmid}), frozenset({vmid}))
    return _audit_vm(scan, node, vmid)


@dataclass(frozen=True)
class _Scan:
    """What one audit reads once: the storages, which VMs may have settings and pid files
    (the others are not looked for)."""

    host: PveHost
    storage: StorageConfig
    with_settings: frozenset[int]
    with_pid_file: frozenset[int]


def _vmids_with(directory: Path, suffix: str) -> frozenset[int]:
    """The VMs with a ``<vmid><suffix>`` file in ``directory`` (listed once, not looked up
    per VM: a host has thousands)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return frozenset()
    return frozenset(int(name[:-len(suffix)]) for name in names
                     if name.endswith(suffix) and name[:-len(suffix)].isdigit())


def _audit_vm(scan: _Scan, node: str, vmid: int) -> VmAudit:
    host = scan.host
    try:
        vm = host.load_vm(node, vmid)
        settings = read_settings(host.paths.cache_settings(vmid), vmid) \
            if vmid in scan.with_settings else {}
    except QdiskError as error:
        # A VM whose files cannot be read is reported; the audit goes on with the others.
        return VmAudit(vmid, node, None, False, None, (), str(error))
    # Running here: on its node, or on this one as the target of a migration.
    pid = host.running_pid(vmid) if vmid in scan.with_pid_file else None
    record = read_record(host, vmid, pid) if pid is not None else None
    disks = []
    for key, text in vm.disk_lines():
        try:
            drive = parse_drive(key, text).drive
        except DriveError as error:
            disks.append(DiskAudit(key, text.split(",", 1)[0], None, None, None, "unknown",
                                   problem="; ".join(error.lines())))
            continue
        if is_disk(drive):
            disks.append(_audit_disk(host, vm, drive, settings, record, scan.storage))
    return VmAudit(vmid, node, vm.name, pid is not None, vm.lock, tuple(disks))


def _audit_disk(host: PveHost, vm: HostVm, drive: Drive, settings: CacheSettings,
                record: Record | None, storage: StorageConfig) -> DiskAudit:
    key = drive.key
    values = settings.get(key, {})
    setting_text = print_settings_value(values) if values else None
    source = _cache_source(key, values, record)
    try:
        disk = resolve_disk(with_settings(drive, values), storage)
    except InvalidInputError as error:
        return DiskAudit(key, drive.file, None, None, setting_text, source, problem=str(error))
    found = (key, drive.file, disk.storage.id if disk.storage else None, disk.format,
             setting_text, source)
    problem = host.unreadable_reason(vm, disk)
    if problem is None and disk.path is not None:
        try:
            chain = read_chain(disk.path, format="qcow2" if disk.format == "qcow2" else "raw",
                               tools=host.tools)
        except InvalidInputError as error:
            return DiskAudit(*found, problem=str(error))
        try:
            return DiskAudit(*found, layers=_layers(disk, chain, source, record, host))
        except QemuCacheError as error:
            # Its settings would not reach QEMU (which refuses them): QEMU's defaults stay.
            return DiskAudit(*found[:-1], "default", _layers(disk, chain, "default", None, host),
                             settings_problem=str(error))
        except InvalidInputError as error:
            problem = str(error)
    return DiskAudit(*found, problem=problem)


def _cache_source(key: str, values: Mapping[str, object], record: Record | None) -> str:
    """``applied`` (qdisk applied the cache to the running VM), ``not applied`` (it runs
    with QEMU's defaults although it has settings), ``settings`` (its next start gets
    them), ``default`` (QEMU's)."""
    if record is not None:
        if key in record.disks:
            return "applied"
        return "not applied" if values else "default"
    return "settings" if values else "default"


def _layers(disk: Disk, chain: list[ImageInfo], source: str, record: Record | None,
            host: PveHost) -> tuple[LayerAudit, ...]:
    options = _options_now(disk, chain, source, record, host)
    layers = []
    for image, image_options in zip(chain, options):
        if not image.is_qcow2:
            layers.append(LayerAudit(image, {}, None, None, 0))
            continue
        try:
            effective, auto, auto_memory = _caches(
                image.virtual_size, image.cluster_size, image.refcount_bits, image.extended_l2,
                tuple(image_options.items()))
        except QemuCacheError:
            # Again on the image itself: QEMU's refusal names its file.
            cache.effective_cache(image, CacheOptions.from_qemu(image_options))
            raise
        layers.append(LayerAudit(image, image_options, effective, auto, auto_memory))
    return tuple(layers)


@functools.lru_cache(maxsize=4096)
def _caches(virtual_size: int, cluster_size: int | None, refcount_bits: int | None,
            extended_l2: bool, options: tuple[tuple[str, int], ...]
            ) -> tuple[EffectiveCache, int, int]:
    """An image's cache with ``options``, its auto size and what that costs, from the facts
    they depend on: a host's images come in few sizes and layouts."""
    image = ImageInfo("", "qcow2", virtual_size, cluster_size=cluster_size,
                      refcount_bits=refcount_bits, extended_l2=extended_l2)
    auto = cache.auto_size(image).cache_size
    return (cache.effective_cache(image, CacheOptions.from_qemu(dict(options))), auto,
            _memory(cache.effective_cache(image, CacheOptions(cache_size=auto))))


def _options_now(disk: Disk, chain: list[ImageInfo], source: str, record: Record | None,
                 host: PveHost) -> list[Mapping[str, int]]:
    """The QEMU cache options of each image of the chain now (see the module)."""
    defaults: list[Mapping[str, int]] = [{} for _ in chain]
    if source in ("default", "not applied") or not chain[0].is_qcow2:
        return defaults
    if source == "applied" and record is not None:
        applied = {node.filename: node.cache for node in record.disks[disk.key].nodes}
        return [applied.get(image.filename, {}) for image in chain]
    # The graph qdisk builds for the drive holds each image's options (a chain's images
    # are explicit nodes only when their caches are sized from the image).
    nodes = backing_chain(format_node(disk, tools=host.tools))
    for depth, node in enumerate(nodes[:len(chain)]):
        defaults[depth] = CacheOptions.from_qemu(node).as_qemu()
    return defaults


# --- a budget -------------------------------------------------------------------------------


def plan_budget(vms: Sequence[VmAudit], budget: int) -> BudgetPlan:
    """Share ``budget`` bytes among the readable qcow2 disks of ``vms`` (see the module)."""
    disks = sorted(((vm.vmid, disk) for vm in vms for disk in vm.disks if disk.is_qcow2),
                   key=lambda item: (item[1].auto_memory, item[0], item[1].key))
    entries: list[BudgetEntry] = []
    partial: list[tuple[int, DiskAudit]] = []
    left = budget
    for vmid, disk in disks:
        if not partial and disk.auto_memory <= left:
            entries.append(BudgetEntry(vmid, disk.key, f"{cache.AUTO_SIZE_KEY}=1",
                                       disk.auto_memory, disk.auto_memory, 100.0))
            left -= disk.auto_memory
        else:
            partial.append((vmid, disk))
    total_size = sum(_top(disk).image.virtual_size for _vmid, disk in partial) or 1
    for vmid, disk in partial:
        entries.append(_partial_entry(vmid, disk, left * _top(disk).image.virtual_size // total_size))
    return BudgetPlan(budget, tuple(entries))


def _top(disk: DiskAudit) -> LayerAudit:
    assert disk.top is not None
    return disk.top


def _partial_entry(vmid: int, disk: DiskAudit, share: int) -> BudgetEntry:
    """A ``qcow2-cache-size`` of the top image from ``share`` bytes, less what the chain's
    other images take at QEMU's defaults."""
    top = _top(disk)
    below = sum(_memory(cache.default_cache(layer.image)) for layer in disk.layers[1:]
                if layer.image.is_qcow2)
    mib = max(1, min(MAX_CACHE_SIZE_MIB, (share - below) // MIB))
    effective = cache.effective_cache(top.image, CacheOptions(cache_size=mib * MIB))
    return BudgetEntry(vmid, disk.key, f"qcow2-cache-size={mib}", _memory(effective) + below,
                       disk.auto_memory, cache.coverage_percent(effective))

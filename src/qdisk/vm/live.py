"""Changes to a drive of a running VM: the qcow2 cache over QMP ``blockdev-reopen``, and
throttle limits; everything else waits for the next start.

A change is classified by key, as qemu-server's vmconfig_update_disk does, except the
cache, which qemu-server keeps pending and qdisk applies live:

- the six ``qcow2-*`` keys on a qcow2 disk: the format node (and each explicit backing
  node whose cache changes) is reopened with the complete options
  :mod:`qdisk.qemu.nodes` builds for the new drive, so a live change is what a restart
  would give; QEMU resets every option left out of a reopen;
- throttle limits: ``qom-set`` of the throttle group (``-blockdev`` VMs) or
  ``block_set_io_throttle`` (``-drive`` VMs), every limit given, since QEMU keeps the
  limits a ``qom-set`` leaves out;
- ``backup``, ``replicate``, ``size``: QEMU never sees them (config only);
- every other key (qemu-server's "skip" list aio, discard, iothread, queues, product,
  cache, ssd, vendor, ro, and detect_zeroes, serial, model, ...): pending until the
  next start. One pending key keeps the whole drive change pending.

What was applied is recorded in the VM's state (:mod:`qdisk.vm.state`), written at start
(:func:`initial_state`) and after each reopen.

The reopen itself is :mod:`qdisk.qemu.reopen`, which also serves the VMs of a Proxmox VE
host (:mod:`qdisk.pve.apply`).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from qdisk import cache
from qdisk.cache.options import QCOW2_OPTIONS
from qdisk.config.drive import Drive
from qdisk.qemu.command import Syntax
from qdisk.qemu.nodes import (
    Disk,
    DriveGraph,
    format_node,
    ignored_cache_options,
    resolve_disk,
)
from qdisk.qemu.qmp import QmpConnection, QmpError
from qdisk.qemu.reopen import (
    NotLive,
    applied_chain,
    plan_reopen,
    reopen,
    running_chain,
    running_qemu_version,
)
from qdisk.qemu.rules import THROTTLE_LIMITS, throttle_group_id, throttle_limits
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.vm.state import VmState, read_state, write_state

# Drive keys QEMU never sees: a change is only recorded.
CONFIG_ONLY_KEYS = frozenset({"backup", "replicate", "size"})
THROTTLE_KEYS = frozenset(limit.drive_key for limit in THROTTLE_LIMITS)
# The qcow2 keys blockdev-reopen applies to a running VM.
CACHE_KEYS = frozenset(option.drive_key for option in QCOW2_OPTIONS if option.live)


class LiveOutcome(enum.Enum):
    LIVE = "live"                 # the running VM has the new drive
    PENDING = "pending"           # the change waits for the next start
    CONFIG_ONLY = "config-only"   # QEMU never sees what changed


@dataclass(frozen=True)
class LiveResult:
    outcome: LiveOutcome
    messages: tuple[str, ...]


@dataclass(frozen=True)
class DriveChange:
    """The keys whose values differ between two versions of a drive, by how a running
    VM can take them."""

    cache: frozenset[str]
    throttle: frozenset[str]
    config_only: frozenset[str]
    pending: frozenset[str]

    @property
    def live(self) -> frozenset[str]:
        return self.cache | self.throttle


def classify(old: Drive, new: Drive) -> DriveChange:
    changed = frozenset(key for key in {*old.values, *new.values}
                        if old.get(key) != new.get(key))
    live_or_recorded = CACHE_KEYS | THROTTLE_KEYS | CONFIG_ONLY_KEYS
    return DriveChange(changed & CACHE_KEYS, changed & THROTTLE_KEYS,
                       changed & CONFIG_ONLY_KEYS, changed - live_or_recorded)


def initial_state(syntax: Syntax, graphs: Mapping[str, DriveGraph], pid: int) -> VmState:
    """The state of a VM just started with ``graphs`` (``VmCommand.graphs``)."""
    disks = {key: applied_chain(graph.format_node)
             for key, graph in graphs.items() if graph.format_node is not None}
    return VmState(syntax, pid, {key: nodes for key, nodes in disks.items() if nodes})


def apply_drive_change(settings: Settings, vmid: int, old: Drive, new: Drive,
                       storage_config: StorageConfig) -> LiveResult:
    """Apply the change from ``old`` (the drive the running VM has) to ``new`` (same key,
    same volume) to running VM ``vmid``, as far as QEMU can take it live.

    The caller holds the VM's config lock (``store.lock_path``), which also serialises
    the state file's read-modify-write. Raises QmpCommandError when QEMU refuses; then
    nothing in QEMU changed.
    """
    change = classify(old, new)
    disk = resolve_disk(new, storage_config)
    messages: list[str] = []
    cache_keys = change.cache
    if cache_keys and disk.format != "qcow2":
        messages += ignored_cache_options(disk)
        cache_keys = frozenset()
    if change.pending:
        return LiveResult(LiveOutcome.PENDING, tuple(_pending_messages(new.key, change)))
    messages += [f"{new.key}.{name}: recorded (QEMU does not use it)"
                 for name in sorted(change.config_only)]
    if not cache_keys and not change.throttle:
        outcome = LiveOutcome.CONFIG_ONLY if messages else LiveOutcome.LIVE
        return LiveResult(outcome, tuple(messages))
    try:
        messages += _apply(settings, vmid, old, new, disk, cache_changed=bool(cache_keys),
                           throttle_changed=bool(change.throttle))
    except NotLive as error:
        return LiveResult(LiveOutcome.PENDING,
                          (f"{error}: the change takes effect at the next start",))
    return LiveResult(LiveOutcome.LIVE, tuple(messages))


def _pending_messages(key: str, change: DriveChange) -> list[str]:
    messages = [f"{key}.{name}: takes effect at the next start" for name in sorted(change.pending)]
    if change.live:
        messages.append(f"{key}: {', '.join(sorted(change.live))}: also wait for the next start "
                        "(the drive has changes that cannot be applied live)")
    return messages


def _apply(settings: Settings, vmid: int, old: Drive, new: Drive, disk: Disk, *,
           cache_changed: bool, throttle_changed: bool) -> list[str]:
    """Plan the reopen (queries only), set the throttle limits (one QMP command, all or
    nothing), then reopen; if QEMU refuses the reopen, the old limits are restored."""
    state = read_state(settings, vmid)
    if state is None:
        raise NotLive(f"{new.key}: no readable record of how the VM was started "
                      f"({settings.layout.run_files(vmid).state})")
    syntax = state.syntax
    with QmpConnection(settings.layout.run_files(vmid).qmp) as qmp:
        plan = None
        if cache_changed:
            wanted = format_node(disk, tools=settings.tools, explicit_backing=True,
                                 qemu_version=running_qemu_version(qmp))
            plan = plan_reopen(disk.key, wanted, running_chain(qmp, disk.key, wanted["node-name"]),
                               state.disks.get(new.key, []),
                               replace_qemu_levels=cache.uses_auto_size(disk.drive))
        messages = []
        if throttle_changed:
            _set_throttle(qmp, syntax, new)
            messages.append(f"{new.key}: throttle limits applied live")
        if plan is not None:
            try:
                reopen(qmp, plan)
            except QmpError:
                if throttle_changed:
                    # QEMU's refusal is the error to report.
                    with contextlib.suppress(QmpError):
                        _set_throttle(qmp, syntax, old)
                raise
            messages += plan.messages
            state.disks[new.key] = plan.applied_nodes
            write_state(settings, vmid, state)
    return messages


# --- throttle limits ------------------------------------------------------------------


def _set_throttle(qmp: QmpConnection, syntax: Syntax, drive: Drive) -> None:
    """Every limit, the unset ones at QEMU's defaults: ``qom-set`` keeps the limits it
    is not given (checked on QEMU 7.2)."""
    limits = {limit.qemu_name: limit.unset_value for limit in THROTTLE_LIMITS}
    limits.update(throttle_limits(drive))
    if syntax == "blockdev":
        qmp.execute("qom-set", {"path": f"/objects/{throttle_group_id(drive.key)}",
                                "property": "limits", "value": limits})
    else:
        # ``id`` is the guest device's qdev id (the drive key), not the -drive's id.
        qmp.execute("block_set_io_throttle", {
            "id": drive.key,
            **{limit.legacy_name: limits[limit.qemu_name] for limit in THROTTLE_LIMITS}})



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
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from qdisk import cache
from qdisk.drive import QCOW2_CACHE_KEYS, Drive
from qdisk.errors import QdiskError
from qdisk.qemu.command import Syntax
from qdisk.qemu.nodes import (
    THROTTLE_LIMITS,
    Disk,
    DriveGraph,
    Node,
    format_node,
    ignored_cache_options,
    reopen_options,
    resolve_disk,
    throttle_group_id,
    throttle_limits,
)
from qdisk.qemu.qmp import QmpConnection, QmpError
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.vm.state import AppliedNode, VmState, read_state, write_state

# Drive keys QEMU never sees: a change is only recorded.
CONFIG_ONLY_KEYS = frozenset({"backup", "replicate", "size"})
THROTTLE_KEYS = frozenset(limit.drive_key for limit in THROTTLE_LIMITS)
CACHE_KEYS = frozenset(QCOW2_CACHE_KEYS)


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


class _NotLive(QdiskError):
    """The running VM is not the one the change can be applied to live (unknown state,
    other node names): the change waits for the next start."""


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


def applied_chain(node: Node) -> list[AppliedNode]:
    """What the state records of a format node and its explicit backing nodes: each qcow2
    node's name, file and cache options."""
    return _applied_nodes(_backing_chain(node))


def apply_drive_change(settings: Settings, vmid: int, old: Drive, new: Drive,
                       storage_config: StorageConfig) -> LiveResult:
    """Apply the change from ``old`` (the drive the running VM has) to ``new`` (same key,
    same volume) to running VM ``vmid``, as far as QEMU can take it live.

    The caller holds the VM's config lock (``vmconfig.lock_path``), which also serialises
    the state file's read-modify-write. Raises QmpCommandError when QEMU refuses; then
    nothing in QEMU changed.
    """
    change = classify(old, new)
    disk = resolve_disk(new, storage_config)
    messages: list[str] = []
    cache_keys = change.cache
    if cache_keys and disk.format != "qcow2":
        messages += ignored_cache_options(disk) or [
            f"{new.key}: {', '.join(sorted(cache_keys))}: has no effect without qcow2"]
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
    except _NotLive as error:
        return LiveResult(LiveOutcome.PENDING, (str(error),))
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
        raise _NotLive(f"{new.key}: no readable record of how the VM was started "
                       f"({settings.layout.run_files(vmid).state}): the change takes effect at "
                       f"the next start")
    syntax = state.syntax
    with QmpConnection(settings.layout.run_files(vmid).qmp) as qmp:
        plan = None
        if cache_changed:
            plan = _plan_reopen(qmp, disk, settings, state.disks.get(new.key, []))
        messages = []
        if throttle_changed:
            _set_throttle(qmp, syntax, new)
            messages.append(f"{new.key}: throttle limits applied live")
        if plan is not None:
            try:
                _reopen(qmp, plan)
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


# --- the qcow2 cache ------------------------------------------------------------------


@dataclass(frozen=True)
class _ReopenPlan:
    """What brings a running chain to the new drive's cache: the backing node to add
    first (with its own backing nodes nested), the ``blockdev-reopen`` options (one
    transaction), the state's node list afterwards and the messages."""

    added: Node | None
    options: list[Node]
    applied_nodes: list[AppliedNode]
    messages: list[str]


def _plan_reopen(qmp: QmpConnection, disk: Disk, settings: Settings,
                 applied: list[AppliedNode]) -> _ReopenPlan:
    """The wanted chain is built with every backing node explicit. Levels QEMU opened
    itself (auto-generated names, which cannot be reopened) are left alone unless the
    new drive sizes the backing images' caches: then they are replaced by qdisk's nodes,
    added read-only with ``blockdev-add`` and attached by reopening their parent (QEMU
    drops the implicit nodes no parent uses any more). Of the other levels, the qcow2
    nodes whose cache differs from the one last applied are reopened.
    """
    wanted = _backing_chain(format_node(disk, tools=settings.tools, explicit_backing=True,
                                        qemu_version=running_qemu_version(qmp)))
    running = _running_chain(qmp, disk.key, wanted[0]["node-name"])
    if len(running) != len(wanted):
        raise _NotLive(f"{disk.key}: the running backing chain has {len(running)} images, the "
                       f"image's header {len(wanted)}: the change takes effect at the next start")
    # The first level QEMU did not open under qdisk's name; below it, none are.
    first_foreign = next((depth for depth, node in enumerate(wanted)
                          if running[depth] != node["node-name"]), len(wanted))
    added = None
    if first_foreign < len(wanted) and cache.uses_auto_size(disk.drive):
        added = wanted[first_foreign]
        running[first_foreign:] = [node["node-name"] for node in wanted[first_foreign:]]
    was = {node.node_name: dict(node.cache) for node in applied}
    options, messages = [], []
    for depth in range(first_foreign):
        node = wanted[depth]
        new_backing = added is not None and depth == first_foreign - 1
        if node["driver"] != "qcow2" or (was.get(node["node-name"]) == _cache_of(node)
                                         and not new_backing):
            continue
        reopen = reopen_options(node)
        if depth + 1 < len(wanted):
            reopen["backing"] = running[depth + 1]
        options.append(reopen)
        messages.append(_applied_message(disk.key, node))
    if added is not None:
        messages += [_applied_message(disk.key, node) for node in _backing_chain(added)
                     if node["driver"] == "qcow2"]
    named = wanted[:first_foreign] if added is None else wanted
    return _ReopenPlan(added, options, _applied_nodes(named), messages or [
        f"{disk.key}: QEMU already has these qcow2 cache options"])


def _reopen(qmp: QmpConnection, plan: _ReopenPlan) -> None:
    if plan.added is not None:
        qmp.execute("blockdev-add", plan.added)
    if not plan.options:
        return
    try:
        qmp.execute("blockdev-reopen", {"options": plan.options})
    except QmpError:
        if plan.added is not None:
            # QEMU's refusal is the error to report; a node left behind costs address space only.
            with contextlib.suppress(QmpError):
                qmp.execute("blockdev-del", {"node-name": plan.added["node-name"]})
        raise


def running_qemu_version(qmp: QmpConnection) -> tuple[int, int, int]:
    """The version of the QEMU at the other end: which node options it takes."""
    version = qmp.execute("query-version")["qemu"]
    return int(version["major"]), int(version["minor"]), int(version["micro"])


def _running_chain(qmp: QmpConnection, key: str, top_name: str) -> list[str]:
    """The node names of the running backing chain from ``top_name`` down (QEMU's
    ``#blockN`` for images it opened itself)."""
    graph = qmp.execute("x-debug-query-block-graph")
    names = {node["id"]: node["name"] for node in graph["nodes"]
             if node["type"] == "block-driver"}
    if top_name not in names.values():
        raise _NotLive(f"{key}: QEMU has no node '{top_name}' (the VM was not started with "
                       "qdisk's node names for this drive): the change takes effect at the "
                       "next start")
    backing = {names[edge["parent"]]: names[edge["child"]] for edge in graph["edges"]
               if edge["name"] == "backing" and edge["parent"] in names}
    chain = [top_name]
    while chain[-1] in backing:
        chain.append(backing[chain[-1]])
    return chain


def _backing_chain(node: Node | None) -> list[Node]:
    """The format nodes from ``node`` down its explicit backing nodes."""
    chain = []
    while isinstance(node, dict):
        chain.append(node)
        node = node.get("backing")
    return chain


def _cache_of(node: Node) -> dict[str, int]:
    return {name: node[name] for name in cache.QEMU_OPTION_NAMES if name in node}


def _applied_nodes(chain: list[Node]) -> list[AppliedNode]:
    return [AppliedNode(node["node-name"], node["file"]["filename"], _cache_of(node))
            for node in chain if node["driver"] == "qcow2"]


def _applied_message(key: str, node: Node) -> str:
    return (f"{key}: {node['file']['filename']}: qcow2 cache "
            f"{cache.describe_options(_cache_of(node))} applied live")

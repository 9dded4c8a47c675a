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

The reopen itself (:func:`running_chain`, :func:`plan_reopen`, :func:`reopen`) takes the
QMP connection, the wanted graph and what was applied, not the settings, so it also
serves VMs that qdisk did not start (a Proxmox VE host's, :mod:`qdisk.pve.apply`): the
running chain is read from QEMU, node names and all.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from qdisk import cache, processes
from qdisk.cache import CacheOptions
from qdisk.cache.options import QCOW2_OPTIONS
from qdisk.drive import Drive
from qdisk.errors import QdiskError
from qdisk.qemu.blockdev import reopen_options
from qdisk.qemu.command import Syntax
from qdisk.qemu.nodes import (
    Disk,
    DriveGraph,
    Node,
    NodeKeys,
    backing_chain,
    format_node,
    ignored_cache_options,
    resolve_disk,
)
from qdisk.qemu.qmp import QmpConnection, QmpError
from qdisk.qemu.rules import THROTTLE_LIMITS, throttle_group_id, throttle_limits
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.vm.state import AppliedNode, VmState, read_state, write_state

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


class NotLive(QdiskError):
    """The running VM's disk cannot take the change live (unknown state, other images or
    options, nodes QEMU named itself); the message says why, the caller what happens
    instead (``vm set``: the change waits for the next start)."""


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
    return _applied_nodes(backing_chain(node))


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


# --- the qcow2 cache ------------------------------------------------------------------


@dataclass(frozen=True)
class RunningLevel:
    """One image of a running disk's backing chain as QEMU reports it: its format node,
    the node under it (``file``), and the options a reopen must keep as they are."""

    node_name: str
    file_node_name: str | None
    filename: str
    driver: str
    read_only: bool
    detect_zeroes: str
    cache: Mapping[str, bool] = field(default_factory=dict)

    @property
    def named_by_qemu(self) -> bool:
        """QEMU generated the node's name (``#block123``): it opened the node itself, from
        the header of the image above or from a ``-drive`` without names. QEMU cannot
        reopen such a node (7.2: "Cannot change the option 'node-name'")."""
        return self.node_name.startswith("#")


def running_chain(qmp: QmpConnection, key: str, node_name: str) -> list[RunningLevel]:
    """The running backing chain from the format node ``node_name`` down (a throttle node
    named instead, as qemu-server's ``drive-scsi0``, stands for the node under it).
    Refused while a block job (backup, mirror, commit, stream) uses one of its nodes."""
    graph = qmp.execute("x-debug-query-block-graph")
    names = {node["id"]: node["name"] for node in graph["nodes"]
             if node["type"] == "block-driver"}
    if node_name not in names.values():
        raise NotLive(f"{key}: QEMU has no node '{node_name}'")
    children = {(names[edge["parent"]], edge["name"]): names[edge["child"]]
                for edge in graph["edges"] if edge["parent"] in names and edge["child"] in names}
    jobs = {node["id"]: node["name"] for node in graph["nodes"] if node["type"] == "block-job"}
    used_by_jobs = {names.get(edge["child"]): jobs[edge["parent"]] for edge in graph["edges"]
                    if edge["parent"] in jobs}
    infos = {info["node-name"]: info
             for info in qmp.execute("query-named-block-nodes", {"flat": True})}
    chain: list[RunningLevel] = []
    name: str | None = node_name
    while name is not None:
        if name in used_by_jobs:
            raise NotLive(f"{key}: block job '{used_by_jobs[name]}' is using node {name}")
        info, file_node = infos[name], children.get((name, "file"))
        if info["drv"] == "throttle" and not chain:
            name = file_node
            continue
        # The protocol node's filename: a format node with explicit children reports a
        # json:{...} one.
        filename = infos[file_node]["file"] if file_node in infos else info["file"]
        chain.append(RunningLevel(
            name, file_node, filename, info["drv"], info["ro"], info["detect_zeroes"],
            {option: info["cache"][option] for option in ("direct", "no-flush")}))
        name = children.get((name, "backing"))
    return chain


@dataclass(frozen=True)
class ReopenPlan:
    """What brings a running chain to the new drive's cache: the backing node to add
    first (with its own backing nodes nested), the ``blockdev-reopen`` options (one
    transaction), the chain's node names afterwards, the qcow2 nodes' caches afterwards
    (the state's node list) and the messages."""

    added: Node | None
    options: list[Node]
    chain: list[str]
    applied_nodes: list[AppliedNode]
    messages: list[str]


def plan_reopen(key: str, wanted_top: Node, running: list[RunningLevel],
                applied: list[AppliedNode], *, replace_qemu_levels: bool) -> ReopenPlan:
    """The reopen that gives the running chain the caches of ``wanted_top`` (the format
    node with every backing node explicit, :func:`format_node` with ``explicit_backing``).

    Each level is matched by depth; it must run the image the wanted graph names. Levels
    opened under a name (by qdisk, or by qemu-server) are reopened in place, under their
    running names, with the wanted options; each must already run with the options a
    reopen gives it besides the cache (read-only, detect-zeroes, cache mode), else QEMU
    would change those too. Levels QEMU opened itself (``#block`` names) cannot be
    reopened: with ``replace_qemu_levels`` (the drive sizes the backing images' caches)
    they are replaced by the wanted nodes, added read-only with ``blockdev-add`` and
    attached by reopening their parent (QEMU drops the nodes no parent uses any more);
    else they keep QEMU's defaults. Of the levels reopened in place, only the qcow2 nodes
    whose cache differs from the one ``applied`` are.
    """
    wanted = backing_chain(wanted_top)
    if len(running) != len(wanted):
        raise NotLive(f"{key}: the running backing chain has {len(running)} images, the "
                      f"image's header {len(wanted)}")
    for node, level in zip(wanted, running):
        _check_same_image(key, node, level)
    # The first level QEMU opened itself; below it, QEMU opened every one.
    first_foreign = next((depth for depth, level in enumerate(running) if level.named_by_qemu),
                         len(running))
    if first_foreign == 0:
        raise NotLive(f"{key}: QEMU named the disk's node itself ({running[0].node_name}: a VM "
                      f"started with -drive) and cannot reopen such a node")
    for depth in range(first_foreign):
        _check_reopen_keeps(key, wanted[depth], running[depth])
    names = [level.node_name for level in running]
    added = None
    if first_foreign < len(wanted) and replace_qemu_levels:
        added = wanted[first_foreign]
        names[first_foreign:] = [node["node-name"] for node in wanted[first_foreign:]]
    was = {node.node_name: dict(node.cache) for node in applied}
    options, messages = [], []
    for depth in range(first_foreign):
        node, level = wanted[depth], running[depth]
        new_backing = added is not None and depth == first_foreign - 1
        if node["driver"] != "qcow2" or (was.get(level.node_name) == _cache_of(node)
                                         and not new_backing):
            continue
        options.append(_reopen_options(node, level, names[depth + 1:depth + 2]))
        messages.append(_applied_message(key, node))
    if added is not None:
        messages += [_applied_message(key, node) for node in wanted[first_foreign:]
                     if node["driver"] == "qcow2"]
    named = len(wanted) if added is not None else first_foreign
    applied_nodes = [AppliedNode(names[depth], _filename(wanted[depth]), _cache_of(wanted[depth]))
                     for depth in range(named) if wanted[depth]["driver"] == "qcow2"]
    return ReopenPlan(None if added is None else dict(added), options, names, applied_nodes, messages or [
        f"{key}: QEMU already has these qcow2 cache options"])


def _reopen_options(node: NodeKeys, level: RunningLevel, backing: list[str]) -> Node:
    """The wanted node's options for a reopen, under the running node's names."""
    options = {**reopen_options(node), "node-name": level.node_name}
    if level.file_node_name is not None:
        options["file"] = level.file_node_name
    if backing:
        options["backing"] = backing[0]
    return options


def _filename(node: NodeKeys) -> str:
    return str(node["file"].get("filename", node["file"]["node-name"]))


def _check_same_image(key: str, node: NodeKeys, level: RunningLevel) -> None:
    filename = _filename(node)
    if level.driver != node["driver"] or not processes.same_path(level.filename, filename):
        raise NotLive(f"{key}: QEMU runs {level.driver} image {level.filename} (node "
                      f"{level.node_name}) where the config's chain has {node['driver']} image "
                      f"{filename}")


def _check_reopen_keeps(key: str, node: NodeKeys, level: RunningLevel) -> None:
    """A reopen gives the node every option: refused when one besides the cache differs
    from what the node runs with (QEMU would change it)."""
    differences = [f"{name} {running!r} (the config gives {wanted!r})"
                   for name, running, wanted in (
                       ("read-only", level.read_only, node["read-only"]),
                       ("detect-zeroes", level.detect_zeroes, node.get("detect-zeroes", "off")),
                       ("cache", dict(level.cache), node["cache"]))
                   if running != wanted]
    if differences:
        raise NotLive(f"{key}: node {level.node_name} ({level.filename}) runs with "
                      f"{', '.join(differences)}: a reopen would change that")


def reopen(qmp: QmpConnection, plan: ReopenPlan) -> None:
    """Carry out ``plan``; raises QmpCommandError when QEMU refuses (then nothing changed,
    a node added for it is deleted again)."""
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


def _cache_of(node: NodeKeys) -> dict[str, int]:
    return CacheOptions.from_qemu(node).as_qemu()


def _applied_nodes(chain: list[NodeKeys]) -> list[AppliedNode]:
    return [AppliedNode(node["node-name"], node["file"]["filename"], _cache_of(node))
            for node in chain if node["driver"] == "qcow2"]


def _applied_message(key: str, node: NodeKeys) -> str:
    return (f"{key}: {node['file']['filename']}: qcow2 cache "
            f"{cache.describe_options(_cache_of(node))} applied live")

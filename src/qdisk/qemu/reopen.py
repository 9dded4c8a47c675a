"""A running QEMU's qcow2 caches changed in place: the running backing chain read over QMP
(:func:`running_chain`), the reopen that gives it a wanted node graph's caches
(:func:`plan_reopen`), carried out by ``blockdev-reopen`` (:func:`reopen`), and the record
of what was applied per node (:class:`AppliedNode`).

The engine takes the QMP connection, the wanted graph (:func:`qdisk.qemu.nodes.format_node`
with every backing node explicit) and what was applied before, not a home's settings, so it
serves the VMs qdisk starts (:mod:`qdisk.vm.live`) and those of a Proxmox VE host, node
names and all (:mod:`qdisk.pve.apply`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from qdisk import cache
from qdisk.cache import CacheOptions
from qdisk.errors import QdiskError
from qdisk.qemu.blockdev import reopen_options
from qdisk.qemu.nodes import Node, NodeKeys
from qdisk.qemu.qmp import QmpConnection, QmpError
from qdisk.system import processes


def backing_chain(node: Node | None) -> list[NodeKeys]:
    """The format nodes from ``node`` down its explicit backing nodes, top first, read
    through the keys qdisk reads back."""
    chain: list[NodeKeys] = []
    while isinstance(node, dict):
        chain.append(cast(NodeKeys, node))
        node = node.get("backing")
    return chain


@dataclass(frozen=True)
class AppliedNode:
    """One qcow2 node of a running disk and the cache options qdisk gave it."""

    node_name: str
    filename: str
    cache: Mapping[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"node-name": self.node_name, "filename": self.filename, "cache": dict(self.cache)}

    @classmethod
    def from_json(cls, node: Any) -> AppliedNode:
        """The node :meth:`as_json` wrote; KeyError or TypeError when ``node`` is not one."""
        return cls(node["node-name"], node["filename"], dict(node["cache"]))


class NotLive(QdiskError):
    """The running VM's disk cannot take the change live (unknown state, other images or
    options, nodes QEMU named itself); the message says why, the caller what happens
    instead (``vm set``: the change waits for the next start)."""


def applied_chain(node: Node) -> list[AppliedNode]:
    """What the state records of a format node and its explicit backing nodes: each qcow2
    node's name, file and cache options."""
    return _applied_nodes(backing_chain(node))


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

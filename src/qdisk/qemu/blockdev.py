"""Rendering the node graph as ``-blockdev`` JSON and the throttle group ``-object``, and
as the options of a QMP ``blockdev-reopen``.

As qemu-server: one JSON object per drive with sorted keys (Perl's canonical JSON),
booleans and integers as JSON values, never strings. JSON cannot be broken out of by
a file name, so hostile paths stay one ``filename`` value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qdisk import storage
from qdisk.config.drive import Drive
from qdisk.qemu.nodes import DriveGraph, Node, drive_graph
from qdisk.settings import Settings


def reopen_options(node: Mapping[str, Any]) -> Node:
    """The node's options for QMP ``blockdev-reopen``: everything, with the child nodes
    (``file``, ``backing``) given by node name, as reopen requires."""
    return {key: value["node-name"] if key in ("file", "backing") and isinstance(value, dict)
            else value for key, value in node.items()}


def to_json(value: Any) -> str:
    """Canonical compact JSON: sorted keys, no spaces, non-ASCII kept (Perl's to_json)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class BlockdevArguments:
    """What ``-object``/``--object`` and ``-blockdev``/``--blockdev`` get for one drive (as
    dicts; :func:`to_json` renders them), the node to attach to, and warnings."""

    objects: list[Node]
    blockdevs: list[Node]
    top_node_name: str
    warnings: tuple[str, ...]


def graph_arguments(graph: DriveGraph) -> BlockdevArguments:
    """The arguments of a drive graph; an empty drive has its throttle group only."""
    blockdevs = [graph.top] if graph.top is not None else []
    top = graph.top["node-name"] if graph.top is not None else ""
    return BlockdevArguments([graph.throttle_group], blockdevs, top, graph.warnings)


def drive_blockdev(drive: Drive, settings: Settings, *, read_only: bool = False) -> BlockdevArguments:
    """The ``-object``/``-blockdev`` arguments of one drive, volume ids resolved through
    ``settings``' storage.cfg (e.g. for qemu-storage-daemon). ``read_only`` forces every
    node read-only."""
    graph = drive_graph(drive, storage.load(settings), read_only=read_only, tools=settings.tools)
    return graph_arguments(graph)

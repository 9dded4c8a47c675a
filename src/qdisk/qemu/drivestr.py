"""Rendering a drive graph as a legacy ``-drive`` string (machines older than 10.0).

The string is qemu-server's (print_drive_commandline_full), option for option::

    file=PATH,if=none,id=drive-scsi0[,media,cache,rerror,werror,discard][,snapshot]
    [,readonly][,throttling.*],format=FMT[,cache=none],aio=AIO[,detect-zeroes=DZ]

then the Proxmox VE patch's qcow2 options in bytes, then our one addition: the node names of the
graph (``node-name=``, ``file.node-name=``) so the disk can be reopened live, and
explicit backing nodes flattened to ``backing.KEY=`` (``backing.cache-size=``,
``backing.file.filename=``, ``backing.backing.`` one level deeper), then qemu-server's
``readonly=on`` for templates. Every value escapes ``,`` as ``,,``: QEMU's option
syntax reads a single comma as the end of the value, so a path can never end it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qdisk.cache.options import drive_string_order
from qdisk.qemu.nodes import DriveGraph, DriveGraphError, Node, is_volume_chain
from qdisk.qemu.rules import aio_mode, cache_mode, detect_zeroes, throttle_limits
from qdisk.qemuopts import escape

# Drive keys qemu-server copies as they are, in this order.
_PLAIN_OPTIONS = ("media", "cache", "rerror", "werror", "discard")
# The order the Proxmox VE patch appends the qcow2 options to a -drive string.
_QCOW2_OPTION_ORDER = tuple(str(option.qemu_name) for option in drive_string_order())


def drive_string(graph: DriveGraph, *, template_read_only: bool = False) -> str:
    """The ``-drive`` argument of a drive. ``template_read_only``: the VM is a template and
    the bus supports read-only (qemu-server appends ``readonly=on``). A qcow2 volume on a
    storage with ``snapshot-as-volume-chain`` is refused: qemu-server builds those only
    with -blockdev (machine version 10.0 or newer)."""
    disk = graph.disk
    if disk.volume is not None and disk.storage is not None and is_volume_chain(disk):
        raise DriveGraphError(f"{disk.key}: volume '{disk.volume.volid}': qcow2 on storage "
                              f"'{disk.storage.id}' with snapshot-as-volume-chain needs -blockdev "
                              f"(machine version 10.0 or newer)")
    return ",".join(_drive_options(graph, template_read_only))


def _drive_options(graph: DriveGraph, template_read_only: bool) -> Iterator[str]:
    disk, drive = graph.disk, graph.disk.drive
    if disk.path is not None:
        yield f"file={escape(disk.path)}"
    yield "if=none"
    yield f"id=drive-{drive.key}"
    for name in _PLAIN_OPTIONS:
        if drive.get(name) is not None:
            yield f"{name}={drive.get(name)}"
    for name, qemu_name in (("snapshot", "snapshot"), ("ro", "readonly")):
        if drive.get(name) is not None:
            yield f"{qemu_name}={_on_off(drive.get(name) is True)}"
    for name, limit in throttle_limits(drive).items():
        yield f"throttling.{name}={limit}"
    if disk.format is not None:
        yield f"format={disk.format}"
    if drive.get("cache") is None and cache_mode(drive, disk.storage).direct:
        yield "cache=none"
    yield f"aio={aio_mode(drive, disk.storage)}"
    if not drive.is_cdrom:
        yield f"detect-zeroes={detect_zeroes(drive)}"
    node = graph.format_node
    if node is not None:
        yield from (f"{name}={node[name]}" for name in _QCOW2_OPTION_ORDER if name in node)
        yield f"node-name={node['node-name']}"
        yield f"file.node-name={node['file']['node-name']}"
        if "backing" in node:
            yield from flatten(node["backing"], "backing.")
    if template_read_only:
        yield "readonly=on"


def flatten(node: Node, prefix: str = "") -> Iterator[str]:
    """A node as dotted ``-drive`` options: scalars (sorted), then ``file.``, then ``backing.``."""
    children = ("file", "backing")
    for key in sorted(node):
        if key not in children:
            yield from _flatten_value(prefix + key, node[key])
    for key in children:
        if key in node:
            yield from flatten(node[key], f"{prefix}{key}.")


def _flatten_value(name: str, value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flatten_value(f"{name}.{key}", value[key])
    elif isinstance(value, bool):
        yield f"{name}={_on_off(value)}"
    else:
        yield f"{name}={escape(str(value))}"


def _on_off(value: bool) -> str:
    return "on" if value else "off"

"""A snapshot operation on a disk of a running VM, over QMP, as steps that can be resumed.

Internal qcow2 snapshots are one QMP command each (``blockdev-snapshot-internal-sync``,
``blockdev-snapshot-delete-internal-sync`` on the drive's top node ``drive-<key>``).

A volume chain ends with pve-storage's files and qemu-server's nodes (names hash the
drive, the snapshot and the volume; every node built by
:func:`qdisk.qemu.nodes.format_node`, so it carries its layer's cache options). The way
there is not qemu-server's: QEMU 7.2 refuses it, and is right to.

- A second node on a file that a read-write node has open fails ("Failed to get "write"
  lock"), so qemu-server's node on the renamed current image cannot be added while the
  old one holds it. A node is replaced on a backing level instead: the old one reopened
  read-only (``blockdev-snapshot`` does that to the old top), the new one added
  read-only, the level above pointed at it, the old one deleted, the new one reopened
  read-write.
- QEMU reopens a file node *by its name* when a graph change alters its permissions (a
  node detached, a commit into it): after a rename that opens another file, or none. So
  a file keeps every name a node opened it by until that node is gone: a hard link
  gives a layer its new name, and the old name is removed afterwards.
- The top node cannot be replaced in place (the device needs it writable), so it is
  replaced under a temporary overlay (``.qdisk-overlay-<file>``), which
  ``blockdev-snapshot`` puts on top and an active ``block-commit`` folds into the new top.

Taking snapshot ``s``: the volume's image linked as ``snap-s-<file>``, the temporary overlay
pushed, the old top node replaced by the layer's, the volume's name given to a new empty
overlay (``extended_l2``, 128 KiB clusters) whose node goes under the temporary overlay,
which is committed. Deleting the oldest snapshot: its child's data committed into it
(``block-commit``, which writes the child's name into the header above), the layer
linked under the child's name and its node replaced (under a temporary overlay when the
child is the top). Deleting another one: ``block-stream`` from it into its child, then its
file deleted.

Each step is a group of actions that each skip what is done, so the step a killed command
was in is run again by the next one (:mod:`.snapshot_journal`). A block job runs in QEMU
and survives qdisk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from qdisk.qemu.blockdev import reopen_options
from qdisk.qemu.nodes import Node, format_node
from qdisk.qemu.qmp import QmpConnection
from qdisk.qemu.reopen import running_qemu_version
from qdisk.qemu.rules import node_name, top_node_name
from qdisk.settings import Settings
from qdisk.vm.errors import VmError
from qdisk.vm.snapshot_volumes import (
    SnapshotVolume,
    ensure_overlay,
    give_child_name,
    internal_snapshots,
    keep_as_layer,
    new_overlay,
)

Step = tuple[str, Callable[[], None]]
# What the temporary overlay's node names hash where a snapshot name would be (a snapshot
# name starts with a letter, so no snapshot's node is named alike).
TEMPORARY_LAYER = ".qdisk-overlay"
JOB_POLL_SECONDS = 0.005
# A block job whose state and progress stay the same this long is stuck (paused, or QEMU
# hangs): qdisk stops waiting; the job stays in QEMU and the next command waits for it again.
JOB_STALL_SECONDS = 60.0


def read_only(node: Node) -> Node:
    """The node, and its file node, opened read-only."""
    return {**node, "read-only": True, "file": {**node["file"], "read-only": True}}


class LiveDisk:
    """A running disk's chain in QEMU and the changes qdisk makes to it. ``volume`` is the
    drive the VM runs with (its key names the nodes)."""

    def __init__(self, qmp: QmpConnection, settings: Settings, volume: SnapshotVolume) -> None:
        self.qmp = qmp
        self.tools = settings.tools
        self.volume = volume
        self.key = volume.key
        self.version = running_qemu_version(qmp)

    # --- what QEMU has ----------------------------------------------------------------

    def chain(self) -> list[str]:
        """The named format nodes below the drive's throttle node, top first (filters a
        block job inserts are passed through)."""
        graph = self.qmp.execute("x-debug-query-block-graph")
        names = {node["id"]: node["name"] for node in graph["nodes"]}
        children: dict[tuple[int, str], int] = {(edge["parent"], edge["name"]): edge["child"]
                                                for edge in graph["edges"]}
        top = next((node_id for node_id, name in names.items()
                    if name == top_node_name(self.key)), None)
        if top is None:
            raise VmError(f"{self.key}: the running QEMU has no node '{top_node_name(self.key)}' "
                          "(it was not started by qdisk with -blockdev)")
        chain: list[str] = []
        current = children.get((top, "file"))
        while current is not None:
            name = names[current]
            if name.startswith("#"):
                current = children.get((current, "file"), children.get((current, "backing")))
                continue
            chain.append(name)
            current = children.get((current, "backing"))
        return chain

    def has(self, name: str) -> bool:
        return any(node["node-name"] == name
                   for node in self.qmp.execute("query-named-block-nodes", {"flat": True}))

    # --- the nodes the files call for ------------------------------------------------------

    def tree(self) -> Node:
        """The volume's format node with its layers nested, as the files are now (what a
        start would give)."""
        return format_node(self.volume.disk, tools=self.tools, qemu_version=self.version)

    def layers(self) -> list[Node]:
        """The format node of each layer of the chain as the files are now, top first, each
        with its backing given by name (what ``blockdev-add`` and ``blockdev-reopen`` take)."""
        node: Node | None = self.tree()
        layers = []
        while node is not None:
            below = node.get("backing")
            layer = dict(node)
            if isinstance(below, dict):
                layer["backing"] = below["node-name"]
            layers.append(layer)
            node = below if isinstance(below, dict) else None
        return layers

    def layer(self, snapshot: str | None) -> Node:
        """The layer of ``snapshot`` (None: the volume's own image) as the files are now."""
        for layer in self.layers():
            if layer["node-name"] == self.name(snapshot):
                return layer
        raise VmError(f"{self.key}: the volume chain of '{self.volume.volid}' has no layer "
                      f"for {snapshot or 'the current state'}")

    def name(self, snapshot: str | None, prefix: str = "f") -> str:
        """qemu-server's name of the node of ``snapshot``'s layer (None: the volume's image)."""
        return node_name(prefix, self.key, self.volume.volid, snapshot=snapshot)

    def renamed(self, node: Node, snapshot: str | None) -> Node:
        """``node`` under the names of ``snapshot``'s layer."""
        return {**node, "node-name": self.name(snapshot),
                "file": {**node["file"], "node-name": self.name(snapshot, "e")}}

    def temporary(self) -> Node:
        """The temporary overlay's node: the drive's node on that file, its own names."""
        volume = self.volume.disk.volume
        assert volume is not None
        disk = dataclasses.replace(self.volume.disk, volume=dataclasses.replace(
            volume, path=str(self.volume.temporary_path)))
        top = format_node(disk, tools=self.tools, qemu_version=self.version)
        return {**self.renamed(top, TEMPORARY_LAYER), "backing": None}

    # --- changes -------------------------------------------------------------------------

    def add(self, node: Node) -> None:
        if not self.has(node["node-name"]):
            self.qmp.execute("blockdev-add", node)

    def drop(self, name: str) -> None:
        """Delete a node qdisk added (QEMU drops the command line's once unused)."""
        if self.has(name):
            self.qmp.execute("blockdev-del", {"node-name": name})

    def attach(self, parent: Node, backing: str) -> None:
        """Point ``parent`` (its complete options) at the node ``backing``."""
        self.qmp.execute("blockdev-reopen", {"options": [{**reopen_options(parent),
                                                          "backing": backing}]})

    def writable(self, node: Node) -> None:
        """Reopen a node qdisk added read-only with its real options, its file node first.

        One at a time: QEMU 10.0 reopens both in one blockdev-reopen, then every later
        request through the node waits forever (the monitor with it); 7.2 takes either."""
        self.qmp.execute("blockdev-reopen", {"options": [node["file"]]})
        self.qmp.execute("blockdev-reopen", {"options": [reopen_options(node)]})

    def release(self, node: Node) -> None:
        """Reopen a node read-only, its file node left as it is (QEMU keeps the open file),
        so a read-only node on the same file can be added."""
        self.qmp.execute("blockdev-reopen", {"options": [{**reopen_options(node),
                                                          "read-only": True}]})

    def make_temporary(self) -> None:
        ensure_overlay(self.tools, self.volume.temporary_path, self.volume.path)

    def push_temporary(self) -> None:
        temporary = self.temporary()
        self.add(temporary)
        top = self.chain()[0]
        if top != temporary["node-name"]:
            self.qmp.execute("blockdev-snapshot", {"node": top, "overlay": temporary["node-name"]})

    def pop_temporary(self) -> None:
        """Commit the temporary overlay into the node below it, then delete it."""
        name = self.name(TEMPORARY_LAYER)
        self.job("block-commit", f"commit-{top_node_name(self.key)}",
                 {"device": top_node_name(self.key), "top-node": name,
                  "base-node": self.name(None)},
                 done=lambda: name not in self.chain(), active=True)
        self.drop(name)
        self.volume.temporary_path.unlink(missing_ok=True)

    def job(self, command: str, job_id: str, arguments: dict[str, Any], *,
            done: Callable[[], bool], active: bool = False) -> None:
        """Run a block job to its end (resuming one that runs already); an active commit is
        completed once it is ready. ``done``: whether its effect is there already."""
        if self._job(job_id) is None:
            if done():
                return
            self.qmp.execute(command, {"job-id": job_id, "auto-dismiss": False, **arguments})
        completing = False
        seen: tuple[object, ...] = ()
        since = time.monotonic()
        while (job := self._job(job_id)) is not None:
            if (now := (job["status"], job.get("current-progress"), completing)) != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > JOB_STALL_SECONDS:
                raise VmError(f"{self.key}: QEMU's {command} job made no progress for "
                              f"{JOB_STALL_SECONDS:g} s (status {job['status']}): left to QEMU, "
                              "the next command on the VM waits for it again")
            if job["status"] == "ready" and active and not completing:
                self.qmp.execute("job-complete", {"id": job_id})
                completing = True
            elif job["status"] == "concluded":
                self.qmp.execute("job-dismiss", {"id": job_id})
                if job.get("error"):
                    raise VmError(f"{self.key}: QEMU's {command} job failed: {job['error']}")
                return
            time.sleep(JOB_POLL_SECONDS)

    def _job(self, job_id: str) -> dict[str, Any] | None:
        return next((job for job in self.qmp.execute("query-jobs") if job["id"] == job_id), None)


# --- the operations --------------------------------------------------------------------


def internal_snapshot_steps(live: LiveDisk, snapshot: str, *, delete: bool) -> list[Step]:
    command = "blockdev-snapshot-delete-internal-sync" if delete else "blockdev-snapshot-internal-sync"

    def change() -> None:
        if (snapshot in internal_snapshots(live.tools, live.volume.path)) == delete:
            live.qmp.execute(command, {"device": top_node_name(live.key), "name": snapshot})

    return [(command, change)]


def _all(*actions: Callable[[], object]) -> Callable[[], None]:
    """One step of several actions, each skipping what is done: run again, it ends the same."""
    def step() -> None:
        for action in actions:
            action()
    return step


def snapshot_steps(live: LiveDisk, snapshot: str) -> list[Step]:
    """Take ``snapshot`` of a running volume chain (see the module)."""
    volume = live.volume
    top = live.name(None)

    def snapshot_layer() -> Node:
        # The volume's image under the layer's names, before its new overlay exists.
        layer = live.renamed(live.layer(None), snapshot)
        return {**layer, "file": {**layer["file"], "filename": str(volume.layer_path(snapshot))}}

    return [
        ("link the volume's image as the snapshot layer, push a temporary overlay", _all(
            lambda: keep_as_layer(volume, snapshot), live.make_temporary, live.push_temporary)),
        ("replace the old top node by the snapshot layer's", _all(
            lambda: live.add(read_only(snapshot_layer())),
            lambda: live.attach(live.temporary(), live.name(snapshot)),
            lambda: live.drop(top))),
        ("new volume image and its node under the temporary overlay", _all(
            lambda: new_overlay(live.tools, volume, snapshot),
            lambda: live.add(live.layer(None)),
            lambda: live.attach(live.temporary(), top))),
        ("commit the temporary overlay, the snapshot layer read-write", _all(
            live.pop_temporary, lambda: live.writable(live.layer(snapshot)))),
    ]


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """The layers around the one deleted, when the operation began: the image above it
    (``child``: its snapshot, None for the volume's own image) and the snapshot below it
    (``parent``, None when it is the oldest)."""

    child: str | None
    parent: str | None
    child_file: str
    parent_file: str | None


def delete_steps(live: LiveDisk, snapshot: str, around: Neighbours) -> list[Step]:
    """Delete the layer of ``snapshot`` from a running volume chain (see the module)."""
    volume = live.volume
    layer_name = live.name(snapshot)
    child_name = live.name(around.child)
    remove_layer = (lambda: volume.layer_path(snapshot).unlink(missing_ok=True))
    if around.parent is not None:
        assert around.parent_file is not None
        parent_file = around.parent_file
        return [
            ("stream the snapshot layer into its child", lambda: live.job(
                "block-stream", f"stream-{top_node_name(live.key)}",
                {"device": child_name, "base-node": live.name(around.parent),
                 "backing-file": parent_file},
                done=lambda: layer_name not in live.chain())),
            ("drop the snapshot layer", _all(lambda: live.drop(layer_name), remove_layer)),
        ]
    top_child = around.child is None

    def parent_of_child() -> Node:
        if top_child:
            return live.temporary()
        layers = live.layers()
        index = next(i for i, node in enumerate(layers) if node["node-name"] == child_name)
        return layers[index - 1]

    steps: list[Step] = []
    if top_child:
        steps.append(("push a temporary overlay", _all(live.make_temporary, live.push_temporary)))
    steps += [
        ("commit the child into the snapshot layer", lambda: live.job(
            "block-commit", f"commit-{top_node_name(live.key)}",
            {"device": top_node_name(live.key), "top-node": child_name, "base-node": layer_name,
             "backing-file": around.child_file},
            done=lambda: child_name not in live.chain())),
        ("give the snapshot layer the child's name", _all(
            lambda: live.drop(child_name),
            lambda: give_child_name(volume, snapshot, volume.path.parent / around.child_file),
            lambda: live.release(live.renamed(live.layer(around.child), snapshot)))),
        ("replace the snapshot layer's node by the child's", _all(
            lambda: live.add(read_only(live.layer(around.child))),
            lambda: live.attach(parent_of_child(), child_name),
            lambda: live.drop(layer_name), remove_layer,
            lambda: live.writable(live.layer(around.child)))),
    ]
    if top_child:
        steps.append(("commit the temporary overlay", live.pop_temporary))
    return steps

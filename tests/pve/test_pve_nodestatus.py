"""The cluster's view of every VM's settings from the agents' per-node files (no QEMU):
applied, pending on a node, failing and why, stopped, and a node no agent ever ran on."""

from __future__ import annotations

import json
from typing import Any

from qdisk.pve.host import PveHost
from qdisk.pve.nodestatus import NodeStatusFile, cluster_view, parse_node_status

from cli_helpers import RunQdisk
from pve_helpers import OTHER_NODE, THIS_NODE, PveTree

SETTING = "qcow2-l2-cache-size=64"


def disk(settings: str | None, problem: str | None = None) -> dict[str, Any]:
    return {"settings": settings, "at": "2026-12-08T02:00:00Z", "problem": problem,
            "values": [{"filename": "/x.qcow2", "cache": {"l2-cache-size": 64 << 20}}]}


def node_file(tree: PveTree, node: str, vms: dict[str, Any]) -> None:
    path = tree.pve / "qdisk" / "nodes" / f"{node}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"node": node, "vms": vms}))


def test_each_state_of_the_view(tree: PveTree) -> None:
    (tree.pve / "qdisk").mkdir()
    for vmid in (100, 101, 102, 103, 200):
        tree.settings_path(vmid).write_text(f"scsi0: {SETTING}\n")
    tree.settings_path(102).write_text("scsi0: qcow2-l2-cache-size=64\nscsi1: garbage\n")
    node_file(tree, THIS_NODE, {
        "100": {"problem": None, "retrying": False, "disks": {"scsi0": disk(SETTING)}},
        # Settings changed since the agent applied them.
        "101": {"problem": None, "retrying": False,
                "disks": {"scsi0": disk("qcow2-l2-cache-size=8")}},
        "103": {"problem": None, "retrying": False,
                "disks": {"scsi0": disk(SETTING, "scsi0: QEMU refused blockdev-reopen: no")}},
        "104": {"problem": "locked (backup): retried", "retrying": True, "disks": {}}})
    host = PveHost.from_env({"QDISK_PVE_ROOT": str(tree.root), "QDISK_PVE_NODE": THIS_NODE})

    view = cluster_view(host, {100: THIS_NODE, 101: THIS_NODE, 102: THIS_NODE, 103: THIS_NODE,
                               104: THIS_NODE, 105: THIS_NODE, 200: OTHER_NODE})

    assert {vmid: (state.state, state.node) for vmid, state in view.items()} == {
        100: ("applied", THIS_NODE), 101: ("pending", THIS_NODE), 102: ("failing", THIS_NODE),
        103: ("failing", THIS_NODE), 104: ("pending", THIS_NODE), 105: ("none", None),
        200: ("pending", OTHER_NODE)}
    assert view[100].reasons == ("scsi0 at 2026-12-08T02:00:00Z",)
    assert view[101].reasons == ("scsi0: not yet applied by the agent of pve1",)
    assert "line 2" in view[102].reasons[0]
    assert view[103].reasons == ("scsi0: QEMU refused blockdev-reopen: no",)
    assert view[200].reasons == ("no agent has recorded anything on pve2",)
    node_file(tree, OTHER_NODE, {})
    assert cluster_view(host, {200: OTHER_NODE})[200].state == "stopped"


def test_the_file_is_written_only_when_it_changed_and_read_back(tree: PveTree) -> None:
    status = NodeStatusFile(tree.pve / "qdisk" / "nodes" / "pve1.json")
    assert status.save()  # a first, empty record
    version = status.path.stat().st_ino
    assert not status.save()
    assert status.path.stat().st_ino == version
    again = NodeStatusFile(status.path)
    again.load()
    assert not again.save()
    assert parse_node_status(status.path.read_text()) == {}
    assert parse_node_status("{") is None


def test_audit_all_nodes_shows_the_state(tree: PveTree, run_qdisk: RunQdisk) -> None:
    (tree.pve / "qdisk").mkdir()
    tree.settings_path(100).write_text(f"scsi0: {SETTING}\n")
    node_file(tree, THIS_NODE, {"100": {"problem": None, "retrying": False,
                                        "disks": {"scsi0": disk(SETTING)}}})
    result = run_qdisk("pve", "audit", "--all-nodes")
    assert result.exit_code == 0, result.stderr
    assert "  settings: applied on pve1 (scsi0 at 2026-12-08T02:00:00Z)" in result.stdout
    as_json = json.loads(run_qdisk("pve", "audit", "--all-nodes", "--json").stdout)
    [vm] = [vm for node in as_json["nodes"] for vm in node["vms"] if vm["vmid"] == 100]
    assert vm["settings-state"] == {"state": "applied", "node": "pve1",
                                    "reasons": ["scsi0 at 2026-12-08T02:00:00Z"]}

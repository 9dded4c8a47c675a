"""A host's storage.cfg as Proxmox VE reads it (issue 19, row 5): a storage of a type qdisk
does not know (a third-party plugin such as LINSTOR's ``drbd``) and a property of a newer
Proxmox VE are skipped with one warning each; a disk on the skipped storage is reported,
every other disk and VM works (audit, set, hook)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import RunQdisk
from pve_helpers import PveTree, hosted, make_tree

pytestmark = pytest.mark.qemu

UNKNOWN_TYPE = "drbd: linstor\n\tresourcegroup pve-rg\n\tcontroller 10.0.0.9\n\tcontent images\n"
SKIPPED = "storage 'linstor' has type 'drbd', which qdisk does not know"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PveTree]:
    """The usual host, its storage.cfg with a LINSTOR storage and a future property on
    ``local``, and VM 104 with one disk on each of local and linstor."""
    host = make_tree(tmp_path / "root")
    cfg = host.pve / "storage.cfg"
    text = cfg.read_text().replace("\tcontent images,iso,snippets\n",
                                   "\tcontent images,iso,snippets\n\tfuture-option 1\n", 1)
    cfg.write_text(f"{UNKNOWN_TYPE}\n{text}")
    host.image("var/lib/vz", 104, "vm-104-disk-0.qcow2", "1G")
    host.write_vm(104, {"memory": "32", "scsi0": "local:104/vm-104-disk-0.qcow2,size=1G",
                        "scsi1": "linstor:vm-104-disk-1,size=8G"})
    yield from hosted(host, monkeypatch)


def _assert_warned_once(tree: PveTree, stderr: str) -> None:
    cfg = tree.pve / "storage.cfg"
    assert f"warning: {cfg}: line 1: {SKIPPED}: skipped" in stderr
    assert f"warning: {cfg}: line 9: storage 'local': unexpected property 'future-option'" in stderr
    assert stderr.count("'drbd'") == 1 and stderr.count("'future-option'") == 1


def test_audit_reports_the_disk_on_the_skipped_storage_and_every_other(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    result = run_qdisk("pve", "audit", "--json")
    assert result.exit_code == 0, result.stderr
    _assert_warned_once(tree, result.stderr)
    [node] = json.loads(result.stdout)["nodes"]
    vms = {vm["vmid"]: vm for vm in node["vms"]}
    assert sorted(vms) == [100, 101, 102, 104]
    disks = {disk["key"]: disk for disk in vms[104]["disks"]}
    assert disks["scsi0"]["readable"] and disks["scsi0"]["layers"]
    assert not disks["scsi1"]["readable"] and disks["scsi1"]["reason"] == f"scsi1: {SKIPPED}"
    assert all(disk["readable"] for disk in vms[100]["disks"])


def test_set_stores_the_other_disks_settings_and_refuses_the_skipped_storages(
        tree: PveTree, run_qdisk: RunQdisk) -> None:
    stored = run_qdisk("pve", "set", "104", "--scsi0", "qcow2-l2-cache-size=64")
    assert stored.exit_code == 0, stored.stderr
    _assert_warned_once(tree, stored.stderr)
    assert tree.settings_path(104).read_text().endswith("\nscsi0: qcow2-l2-cache-size=64\n")
    refused = run_qdisk("pve", "set", "104", "--scsi1", "qcow2-l2-cache-size=64")
    assert refused.exit_code == 2 and SKIPPED in refused.stderr
    assert tree.settings_path(104).read_text().endswith("\nscsi0: qcow2-l2-cache-size=64\n")


def test_the_hook_applies_a_running_vms_settings(tree: PveTree, run_qdisk: RunQdisk) -> None:
    tree.start(100)
    tree.settings_path(100).parent.mkdir()
    tree.settings_path(100).write_text("scsi0: qcow2-l2-cache-size=64\n")
    hooked = run_qdisk("pve", "hook", "100", "post-start")
    assert hooked.exit_code == 0
    _assert_warned_once(tree, hooked.stderr)
    assert "not applied" not in hooked.stderr
    assert "scsi0: " in hooked.stdout and "applied live" in hooked.stdout

"""storage.cfg of every type: parsed, checked as Proxmox VE checks it, printed back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qdisk import storage
from qdisk.storage.schema import PROPERTIES, TYPES

from cli_helpers import RunQdisk

EVERY_TYPE_CFG = Path(__file__).parent / "data" / "every-type.cfg"


def test_every_type_parses_and_prints_back_byte_identical(every_type: storage.StorageConfig) -> None:
    assert sorted({s.type for s in every_type.storages.values()}) == sorted(TYPES)
    assert storage.print_storage_cfg(every_type) == EVERY_TYPE_CFG.read_text()


def test_every_key_of_every_type_has_a_check() -> None:
    assert {key for kind in TYPES.values() for key in kind.keys} <= set(PROPERTIES)


def test_what_proxmox_ve_fills_in_on_read_is_derived(every_type: storage.StorageConfig) -> None:
    cifs = storage.parse_storage_cfg("cifs: smb\n\tserver 10.0.0.1\n\tshare vms\n").get("smb")
    assert cifs.path == Path("/mnt/pve/smb")
    assert cifs.content == ("images",) and cifs.shared
    assert every_type.get("local-lvm").content == ("rootdir", "images")
    assert every_type.get("ceph-vm").shared and not every_type.get("local-lvm").shared
    assert every_type.get("san-lvm").shared  # declared
    assert every_type.get("esxi").disabled  # a bare boolean key is 1
    assert every_type.get("san-lvm").formats == ("qcow2", "raw")  # volume chain
    assert every_type.get("local-lvm").default_format == "raw"
    assert "content" not in cifs.options  # printing back adds nothing


@pytest.mark.parametrize(("text", "message"), [
    ("nfs: nas\n\texport /srv\n", "line 1: storage 'nas': missing value for required option 'server'"),
    ("lvmthin: t1\n\tvgname pve\n", "missing value for required option 'thinpool'"),
    ("dir: x1\n\tpath relative\n", "line 2: storage 'x1': unable to parse value of 'path': invalid "
                                   "format - value does not look like a valid absolute path"),
    ("nfs: n1\n\tserver bad_name!\n\texport /x\n", "valid server name or IP address"),
    ("iscsi: s1\n\tportal 10.0.0.1:99999\n\ttarget t\n", "valid portal address"),
    ("rbd: r1\n\tmonhost 10.0.0.1;not a host!\n", "valid portal address"),
    ("rbd: r1\n\tkrbd maybe\n", "unable to parse value of 'krbd': type check ('boolean') failed - got 'maybe'"),
    ("cifs: c1\n\tserver s\n\tshare x\n\tsmbversion 4\n",
     "value '4' does not have a value in the enumeration 'default, 2.0, 2.1, 3, 3.0, 3.11'"),
    ("lvm: l1\n\tvgname vg\n\tcontent images,iso\n", "storage does not support content type 'iso'"),
    ("dir: x1\n\tpath /x\n\tcontent images,movies\n", "invalid content type 'movies'"),
    ("iscsi: s1\n\tportal p\n\ttarget t\n\tcontent none,images\n", "unable to combine 'none'"),
    ("btrfs: b1\n\tpath /b\n\tformat qcow2\n", "storage does not support format 'qcow2'"),
    ("dir: x1\n\tpath /x\n\tpath /y\n", "line 3: storage 'x1': unable to parse value of 'path': "
                                        "duplicate attribute"),
    ("dir: x1\n\tpath\n", "unable to parse value of 'path': got undefined value"),
    ("lvm: l1\n\tvgname -vg\n", "valid volume group name"),
    ("nfs: n1\n\tserver s\n\texport /x\n\tprune-backups keep-last=x\n",
     "unable to parse value of 'prune-backups': invalid format - keep-last: type check ('integer') "
     "failed - got 'x'"),
    ("pbs: p1\n\tserver s\n\tdatastore d\n\tport 70000\n", "value must have a maximum value of 65535"),
    ("dir: x1\n\tpath /x\n\tcontent-dirs images=../up\n", "valid directory override"),
    ("dir: x1\n\tpath /x\n\tnodes pve1,-bad\n", "valid node name"),
    ("dir: 1bad\n\tpath /x\n", "line 1: storage ID '1bad' contains illegal characters"),
    ("dir: ab\n\tpath /x\n\ndir: ab\n\tpath /y\n", "line 4: storage 'ab' defined twice"),
    ("drbd: ab\n\tresourcegroup x\n\ndir: ab\n\tpath /y\n", "line 4: storage 'ab' defined twice"),
    ("nonsense\n", "line 1: expected 'TYPE: ID'"),
])
def test_wrong_sections_are_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(storage.StorageError) as error:
        storage.parse_storage_cfg(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_comments_and_case_of_the_type_as_proxmox_ve(tmp_path: Path) -> None:
    config = storage.parse_storage_cfg("# header\nDIR: x1\n# inside\n\tpath /x\n")
    assert config.get("x1").type == "dir" and config.get("x1").options == {"path": "/x"}


def test_storage_config_cli_prints_a_file_back(run_qdisk: RunQdisk, home: Path) -> None:
    result = run_qdisk("storage", "config", str(EVERY_TYPE_CFG))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == EVERY_TYPE_CFG.read_text()


def test_storage_config_cli_warns_about_what_it_skips(run_qdisk: RunQdisk, home: Path,
                                                     tmp_path: Path) -> None:
    pasted = tmp_path / "storage.cfg"
    pasted.write_text("nfs: nas\n\tserver 10.0.0.1\n\texport /srv\n\tvgname pve\n")
    result = run_qdisk("storage", "config", str(pasted))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {pasted}: line 4: storage 'nas': unexpected property 'vgname' (type nfs has: "
        "bwlimit, content, content-dirs, create-base-path, create-subdirs, disable, export, format, "
        "max-protected-backups, mkdir, nodes, options, path, preallocation, prune-backups, server, "
        "snapshot-as-volume-chain): ignored"]
    assert result.stdout == "nfs: nas\n\tserver 10.0.0.1\n\texport /srv\n"


def test_a_broken_home_storage_cfg_stops_vm_commands(run_qdisk: RunQdisk, home: Path) -> None:
    (home / "storage.cfg").write_text("dir: local\n\tpath relative\n")
    result = run_qdisk("vm", "showcmd", "100")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"qdisk: {home}/storage.cfg: line 2: storage 'local': unable "
                                     "to parse value of 'path': invalid format - value does not "
                                     "look like a valid absolute path")


# A storage.cfg of a real cluster: a third-party plugin's storage (LINSTOR) and a property
# of a newer Proxmox VE on a storage qdisk knows.
UNKNOWN_CFG = """dir: local
\tpath /var/lib/vz
\tcontent images,iso
\tfuture-option 1

drbd: linstor
\tresourcegroup pve-rg
\tcontroller 10.0.0.1
\tcontent images,rootdir

nfs: nas
\tserver 10.0.0.5
\texport /srv
"""


def test_unknown_types_and_properties_are_skipped_with_a_warning_naming_the_line() -> None:
    config = storage.parse_storage_cfg(UNKNOWN_CFG, source="/etc/pve/storage.cfg")
    assert list(config.storages) == ["local", "nas"]
    assert config.get("local").options == {"path": "/var/lib/vz", "content": "images,iso"}
    assert config.skipped == {"linstor": "drbd"}
    assert config.warnings == (
        "/etc/pve/storage.cfg: line 4: storage 'local': unexpected property 'future-option' "
        "(type dir has: " + ", ".join(sorted(TYPES["dir"].keys)) + "): ignored",
        "/etc/pve/storage.cfg: line 6: storage 'linstor' has type 'drbd', which qdisk does not "
        "know: skipped (its volumes cannot be used by qdisk)")
    with pytest.raises(storage.StorageError,
                       match="^storage 'linstor' has type 'drbd', which qdisk does not know$"):
        storage.resolve(config, "linstor:vm-100-disk-0")
    assert storage.resolve(config, "local:100/vm-100-disk-0.qcow2").path == \
        "/var/lib/vz/images/100/vm-100-disk-0.qcow2"


def test_vm_commands_warn_once_and_other_disks_work(run_qdisk: RunQdisk, home: Path) -> None:
    (home / "storage.cfg").write_text(UNKNOWN_CFG.replace("/var/lib/vz", str(home / "store")))
    created = run_qdisk("vm", "create", "100", "--scsi0", "local:0.01,format=qcow2")
    assert created.exit_code == 0, created.stderr
    assert created.stderr.count("warning:") == 2
    assert created.stderr.count("'future-option'") == 1 and created.stderr.count("'drbd'") == 1
    # A disk on the skipped storage is refused saying why; the VM's others are not lost.
    refused = run_qdisk("vm", "set", "100", "--scsi1", "linstor:vm-100-disk-1")
    assert refused.exit_code == 2
    assert "scsi1: storage 'linstor' has type 'drbd', which qdisk does not know" in refused.stderr
    assert run_qdisk("vm", "showcmd", "100").exit_code == 0


_LINES = st.sampled_from(["dir: d1", "nfs: n1", "rbd: r1", "lvm: l1", "\tpath /srv/x", "\tserver 10.0.0.1",
                          "\texport /e", "\tvgname vg", "\tcontent images,iso", "\tkrbd", "\tdisable 0",
                          "\tmonhost a.example b.example:6789", "", "# c", "  pool p", "\tformat qcow2"])


@given(st.lists(st.one_of(_LINES, st.text(max_size=30)), max_size=12))
def test_any_text_parses_or_is_refused_and_what_parses_prints_back(lines: list[str]) -> None:
    try:
        config = storage.parse_storage_cfg("\n".join(lines))
    except storage.StorageError as error:
        assert "\n" not in str(error)
        return
    assert storage.parse_storage_cfg(storage.print_storage_cfg(config)).storages == config.storages


def test_storage_list_shows_what_proxmox_ve_derives(run_qdisk: RunQdisk, home: Path) -> None:
    (home / "storage.cfg").write_text(EVERY_TYPE_CFG.read_text())
    listed = run_qdisk("storage", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["san-lvm"] == {"id": "san-lvm", "type": "lvm", "content": ["images"],
                               "formats": ["qcow2", "raw"], "shared": True, "enabled": True}
    assert (rows["san-direct"]["content"], rows["san-direct"]["shared"]) == (["images"], True)
    assert (rows["esxi"]["enabled"], rows["cephfs"]["formats"]) == (False, [])
    text = run_qdisk("storage", "list").stdout.splitlines()
    assert text[0].split() == ["ID", "TYPE", "SHARED", "ENABLED", "FORMATS", "CONTENT"]
    assert text[6].split() == ["san-lvm", "lvm", "yes", "yes", "qcow2,raw", "images"]

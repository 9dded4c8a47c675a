"""Volume ids of every storage type resolved as pve-storage's plugins do."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdisk import storage

from cli_helpers import RunQdisk

ZFS_TARGET = "iqn.2003-01.org.linux-iscsi.nas.x8664:sn.8b1f4b4a3c1d"
FSID = "5b2c1d7e-3f4a-4b6c-9d8e-0a1b2c3d4e5f"


@pytest.mark.parametrize(("volid", "path", "fmt"), [
    ("local:iso/debian.iso", "/var/lib/vz/template/iso/debian.iso", "raw"),
    ("nas:100/vm-100-disk-0.qcow2", "/mnt/pve/nas/images/100/vm-100-disk-0.qcow2", "qcow2"),
    ("nas:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2",
     "/mnt/pve/nas/images/101/vm-101-disk-0.qcow2", "qcow2"),
    ("smb:100/vm-100-disk-1.vmdk", "/mnt/pve/smb/images/100/vm-100-disk-1.vmdk", "vmdk"),
    ("cephfs:iso/x.img", "/mnt/pve/cephfs/template/iso/x.img", "raw"),
    ("btrfs:100/vm-100-disk-0.raw", "/mnt/btrfs/images/100/vm-100-disk-0/disk.raw", "raw"),
    ("san-lvm:vm-100-disk-0.qcow2", "/dev/vg_san/vm-100-disk-0.qcow2", "qcow2"),
    ("san-lvm:vm-100-disk-1", "/dev/vg_san/vm-100-disk-1", "raw"),
    ("local-lvm:base-100-disk-0", "/dev/pve/base-100-disk-0", "raw"),
    ("local-zfs:vm-100-disk-0", "/dev/zvol/rpool/data/vm-100-disk-0", "raw"),
    ("local-zfs:base-100-disk-0/vm-101-disk-0", "/dev/zvol/rpool/data/vm-101-disk-0", "raw"),
    ("local-zfs:subvol-100-disk-0", "/rpool/data/subvol-100-disk-0", "subvol"),
    ("ceph-vm:base-100-disk-0/vm-101-disk-0", "rbd:vm-pool/vm-101-disk-0:conf=@ETC@/ceph.conf", "raw"),
    # An external cluster without priv/ceph/<id>.conf: no conf (monhost names the monitors).
    ("ceph-external:vm-100-disk-0", "rbd:rbd/vm-100-disk-0"
     ":mon_host=192.0.2.31;192.0.2.32;192.0.2.33:auth_supported=none", "raw"),
    ("san:0.0.1.scsi-36001405abcdef", "/dev/disk/by-id/scsi-36001405abcdef", "raw"),
    ("san-direct:lun2", "iscsi://192.0.2.40/iqn.2001-05.com.example:storage.disk2/2", "raw"),
    ("/dev/loop0", "/dev/loop0", None),
])
def test_volumes_resolve_as_pve_storage(every_type: storage.StorageConfig, tmp_path: Path,
                                        volid: str, path: str, fmt: str | None) -> None:
    volume = storage.resolve(every_type, volid)
    assert (volume.path, volume.format) == (path.replace("@ETC@", str(tmp_path)), fmt)


def test_an_external_clusters_conf_is_passed_where_it_exists(every_type: storage.StorageConfig,
                                                             tmp_path: Path) -> None:
    conf = tmp_path / "priv/ceph/ceph-external.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[global]\n")
    volume = storage.resolve(every_type, "ceph-external:vm-100-disk-0")
    assert volume.path.startswith(f"rbd:rbd/vm-100-disk-0:conf={conf}:mon_host=")


def test_rbd_keyring_means_cephx_as_the_user(every_type: storage.StorageConfig, tmp_path: Path) -> None:
    keyring = tmp_path / "priv/ceph/ceph-external.keyring"
    keyring.parent.mkdir(parents=True)
    keyring.write_text("[client.admin]\n")
    volume = storage.resolve(every_type, "ceph-external:vm-100-disk-0")
    assert volume.path.endswith(f":auth_supported=cephx:id=admin:keyring={keyring}")
    assert isinstance(volume.remote, storage.RbdImage)
    assert (volume.remote.auth, volume.remote.user) == ("cephx", "admin")
    assert volume.remote.monitors[:2] == (("192.0.2.31", None), ("192.0.2.32", None))


def test_krbd_device_path_takes_the_fsid_from_ceph_conf(tmp_path: Path) -> None:
    config = storage.parse_storage_cfg("rbd: k1\n\tkrbd 1\n\tpool p\n\tnamespace ns\n",
                                       config_dir=tmp_path)
    with pytest.raises(storage.StorageError, match=f"no 'fsid' in the \\[global\\] section of {tmp_path}"):
        storage.resolve(config, "k1:vm-100-disk-0")
    (tmp_path / "ceph.conf").write_text("fsid = not an ini file\n")
    with pytest.raises(storage.StorageError, match="no 'fsid'"):
        storage.resolve(config, "k1:vm-100-disk-0")
    (tmp_path / "ceph.conf").write_text(f"[global]\n\tfsid = {FSID.upper()}\n")
    volume = storage.resolve(config, "k1:vm-100-disk-0")
    assert (volume.path, volume.remote) == (f"/dev/rbd-pve/{FSID}/p/ns/vm-100-disk-0", None)


def test_zfs_over_iscsi_lun_comes_from_the_lun_table(every_type: storage.StorageConfig,
                                                     tmp_path: Path) -> None:
    table = tmp_path / "priv/zfs/zfs-over-iscsi.luns"
    with pytest.raises(storage.StorageError, match=f"add the line 'vm-100-disk-0 <LUN>' to {table}"):
        storage.resolve(every_type, "zfs-over-iscsi:vm-100-disk-0")
    table.parent.mkdir(parents=True)
    table.write_text("# name lun\nvm-100-disk-0 5\n")
    volume = storage.resolve(every_type, "zfs-over-iscsi:base-9-disk-0/vm-100-disk-0")
    assert volume.path == f"iscsi://192.0.2.20/{ZFS_TARGET}/5"
    assert volume.remote == storage.IscsiLun("192.0.2.20", ZFS_TARGET, 5)


def test_content_dirs_move_a_content_type() -> None:
    config = storage.parse_storage_cfg("dir: d1\n\tpath /srv/d\n\tcontent-dirs images=vm/disks,iso=isos\n")
    assert storage.resolve(config, "d1:100/vm-100-disk-0.raw").path == "/srv/d/vm/disks/100/vm-100-disk-0.raw"
    assert storage.resolve(config, "d1:iso/x.iso").path == "/srv/d/isos/x.iso"


@pytest.mark.parametrize(("volid", "message"), [
    ("nowhere:100/x.raw", "storage 'nowhere' does not exist"),
    ("esxi:ha-datacenter/ds/vm/vm.vmx", "volume 'esxi:ha-datacenter/ds/vm/vm.vmx': storage 'esxi' is disabled"),
    ("pbs:backup/vm/100/2026-01-01T00:00:00Z", "storage 'pbs' (type pbs) holds backup, not VM disks"),
    ("cephfs:100/vm-100-disk-0.raw", "storage 'cephfs' (type cephfs) holds no VM images"),
    ("btrfs:100/vm-100-disk-0.qcow2", "(type btrfs) holds only raw, subvol volumes, not qcow2"),
    ("local-lvm:vm-100-disk-0.qcow2", "(type lvmthin) holds only raw volumes, not qcow2"),
    ("local-lvm:vm-100-disk-0/x", "lvm name 'vm-100-disk-0/x' contains illegal characters"),
    ("local-lvm:data", "unable to parse lvm volume name 'data'"),
    ("local-zfs:rpool", "unable to parse zfs volume name 'rpool'"),
    ("ceph-vm:image", "unable to parse rbd volume name 'image'"),
    ("san:lun1", "unable to parse iscsi volume name 'lun1'"),
    ("san-direct:0.0.1.scsi-3600", "unable to parse iscsi volume name"),
    ("local:100/x y.raw", "unable to parse directory volume name"),
    ("local:100/../x.raw", "'..' is not allowed in a volume name"),
    ("local-zfs:vm-100-disk-0/../../../etc/x", "'..' is not allowed in a volume name"),
    ("san:0.0.1.x/../../sda", "'..' is not allowed in a volume name"),
    ("no volume", "unable to parse volume ID"),
])
def test_wrong_volumes_are_refused(every_type: storage.StorageConfig, volid: str, message: str) -> None:
    with pytest.raises(storage.StorageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        storage.resolve(every_type, volid)


def test_lvm_without_volume_chain_holds_raw_only() -> None:
    config = storage.parse_storage_cfg("lvm: l1\n\tvgname vg\n")
    with pytest.raises(storage.StorageError, match="without snapshot-as-volume-chain\\) holds only raw"):
        storage.resolve(config, "l1:vm-100-disk-0.qcow2")


def test_storage_path_cli(run_qdisk: RunQdisk, home: Path) -> None:
    (home / "storage.cfg").write_text("lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\n"
                                      "iscsidirect: san\n\tportal 10.0.0.1\n\ttarget iqn.x:y\n")
    assert run_qdisk("storage", "path", "local-lvm:vm-100-disk-0").stdout == "/dev/pve/vm-100-disk-0\n"
    assert run_qdisk("storage", "path", "san:lun3").stdout == "iscsi://10.0.0.1/iqn.x:y/3\n"
    refused = run_qdisk("storage", "path", "san:vm-100-disk-0")
    assert refused.exit_code == 2
    assert refused.stderr == "qdisk: volume 'san:vm-100-disk-0': unable to parse iscsi volume name " \
                             "'vm-100-disk-0'\n"

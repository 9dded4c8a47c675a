"""New disks: which storages take them, what they are named, and mounts checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdisk import storage

from cli_helpers import RunQdisk


def _config(text: str, tmp_path: Path) -> storage.StorageConfig:
    return storage.parse_storage_cfg(text.replace("@TMP@", str(tmp_path)))


@pytest.mark.parametrize(("section", "message"), [
    ("lvm: s1\n\tvgname vg\n", "storage 's1' (type lvm): cannot allocate a disk there: it needs the "
                               "LVM tools, which qdisk does not run"),
    ("lvmthin: s1\n\tvgname vg\n\tthinpool data\n", "needs the LVM tools"),
    ("zfspool: s1\n\tpool rpool\n", "needs the ZFS tools"),
    ("rbd: s1\n", "needs the Ceph tools"),
    ("iscsi: s1\n\tportal p\n\ttarget t\n", "it holds only the target's existing LUNs"),
    ("cephfs: s1\n", "storage 's1' does not support vm images"),
    ("dir: s1\n\tpath @TMP@\n\tcontent iso\n", "storage 's1' does not support vm images"),
    ("dir: s1\n\tpath @TMP@\n\tdisable\n", "storage 's1' is disabled"),
    ("dir: s1\n\tpath @TMP@\n\tis_mountpoint yes\n", "directory is expected to be a mount point but "
                                                     "is not mounted: '@TMP@'"),
    ("nfs: s1\n\tserver 10.0.0.1\n\texport /srv\n", "storage 's1' is not mounted: 10.0.0.1:/srv at "
                                                    "/mnt/pve/s1 (qdisk does not mount nfs storages"),
])
def test_storages_qdisk_cannot_allocate_on(tmp_path: Path, section: str, message: str) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(storage.StorageError) as error:
        storage.allocatable_storage(_config(section, tmp_path), "s1", mounts=mounts)
    assert message.replace("@TMP@", str(tmp_path)) in str(error.value)


def test_a_network_storage_needs_its_share_mounted_at_its_path(tmp_path: Path) -> None:
    config = _config("nfs: nas\n\tserver 10.0.0.1\n\texport /srv/pve\n\tpath @TMP@/nas dir\n\n"
                     "cifs: smb\n\tserver files\n\tshare vms\n\tsubdir /pve\n\tpath @TMP@/smb\n\n"
                     "cephfs: cfs\n\tpath @TMP@/cfs\n", tmp_path)
    mounts = tmp_path / "mounts"
    # /proc/mounts escapes a space as \040; the share must be the configured one.
    mounts.write_text(f"10.0.0.1:/srv/other {tmp_path}/nas\\040dir nfs4 rw 0 0\n")
    with pytest.raises(storage.StorageError, match="'nas' is not mounted"):
        storage.allocatable_storage(config, "nas", mounts=mounts)
    mounts.write_text(f"10.0.0.1:/srv/pve/ {tmp_path}/nas\\040dir nfs4 rw 0 0\n"
                      f"//files/vms/pve {tmp_path}/smb cifs rw 0 0\n"
                      f"10.0.0.9:/ {tmp_path}/cfs ext4 rw 0 0\n")
    assert storage.allocatable_storage(config, "nas", mounts=mounts).id == "nas"
    assert storage.allocatable_storage(config, "smb", mounts=mounts).id == "smb"
    with pytest.raises(storage.StorageError, match="does not support vm images"):
        storage.allocatable_storage(config, "cfs", mounts=mounts)
    with pytest.raises(storage.StorageError, match="'cfs' is not mounted: at "):
        storage.check_mounted(config.get("cfs"), mounts=mounts)


def test_a_mount_point_directory_storage(tmp_path: Path) -> None:
    # pve-storage refuses '/' as a path (its path format needs a character after the slash).
    config = _config("dir: root\n\tpath /proc\n\tis_mountpoint 1\n\ndir: other\n\tpath @TMP@\n"
                     "\tis_mountpoint /proc\n", tmp_path)
    storage.check_mounted(config.get("root"))
    storage.check_mounted(config.get("other"))


def test_free_names_per_format_on_nfs_and_cifs_only(tmp_path: Path) -> None:
    config = _config("dir: d1\n\tpath @TMP@/d\n\nnfs: n1\n\tserver s\n\texport /e\n\tpath @TMP@/n\n\n"
                     "btrfs: b1\n\tpath @TMP@/b\n", tmp_path)
    for store in ("d", "n"):
        (tmp_path / store / "images/100").mkdir(parents=True)
        (tmp_path / store / "images/100/vm-100-disk-0.raw").touch()
    assert storage.free_disk_volname(config.get("d1"), 100, "qcow2") == "100/vm-100-disk-1.qcow2"
    assert storage.free_disk_volname(config.get("n1"), 100, "qcow2") == "100/vm-100-disk-0.qcow2"
    assert storage.free_disk_volname(config.get("n1"), 100, "raw") == "100/vm-100-disk-1.raw"
    assert storage.free_disk_volname(config.get("n1"), 100, "raw",
                                     taken=["vm-100-disk-1.raw"]) == "100/vm-100-disk-2.raw"
    assert storage.free_disk_volname(config.get("b1"), 100, "raw") == "100/vm-100-disk-0.raw"
    with pytest.raises(storage.StorageError, match=r"'b1' \(type btrfs\) cannot hold qcow2 images "
                                                   r"\(possible: raw, subvol\)"):
        storage.free_disk_volname(config.get("b1"), 100, "qcow2")


@pytest.mark.qemu
def test_vm_create_allocates_on_btrfs_and_takes_the_storage_format(
        run_qdisk: RunQdisk, home: Path, tmp_path: Path) -> None:
    (home / "storage.cfg").write_text(f"btrfs: b1\n\tpath {tmp_path}/b\n\n"
                                      f"dir: d1\n\tpath {tmp_path}/d\n\tformat qcow2\n")
    created = run_qdisk("vm", "create", "100", "--scsi0", "b1:0.01", "--scsi1", "d1:0.01")
    assert created.exit_code == 0, created.stderr
    config = (home / "qemu-server/100.conf").read_text()
    assert "scsi0: b1:100/vm-100-disk-0.raw,size=10486K\n" in config
    assert "scsi1: d1:100/vm-100-disk-0.qcow2,size=10486K\n" in config
    assert (tmp_path / "b/images/100/vm-100-disk-0/disk.raw").stat().st_size == 10486 * 1024
    assert (tmp_path / "d/images/100/vm-100-disk-0.qcow2").read_bytes()[:4] == b"QFI\xfb"


@pytest.mark.parametrize(("file", "message"), [
    ("nas:1,format=qcow2", "storage 'nas' is not mounted: 192.0.2.1:/nowhere at /mnt/pve/nas (qdisk "
                           "does not mount nfs storages: mount it first)"),
    ("local-lvm:1", "storage 'local-lvm' (type lvmthin): cannot allocate a disk there: it needs the "
                    "LVM tools, which qdisk does not run"),
])
def test_vm_create_refuses_an_unmounted_share_and_a_block_storage(
        run_qdisk: RunQdisk, home: Path, file: str, message: str) -> None:
    (home / "storage.cfg").write_text("nfs: nas\n\tserver 192.0.2.1\n\texport /nowhere\n\n"
                                      "lvmthin: local-lvm\n\tvgname pve\n\tthinpool data\n")
    refused = run_qdisk("vm", "create", "100", "--scsi0", file)
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == ["qdisk: VM 100: invalid values, nothing changed:",
                                           f"  scsi0: {message}"]
    assert not (home / "qemu-server/100.conf").exists()

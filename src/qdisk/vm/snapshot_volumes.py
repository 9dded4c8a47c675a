"""One volume's part of a snapshot operation, as pve-storage does it on a stopped VM.

Which volumes take part and how (pve-storage's ``volume_has_feature('snapshot')`` and
``volume_qemu_snapshot_method``):

- qcow2 on a file storage without ``snapshot-as-volume-chain``: internal qcow2 snapshots
  (``qemu-img snapshot -c|-d|-a``; QMP on a running VM, :mod:`.snapshot_live`);
- qcow2 on a file storage with ``snapshot-as-volume-chain``: a chain of qcow2 layers.
  Snapshot ``s`` of ``vm-100-disk-0.qcow2`` is ``snap-s-vm-100-disk-0.qcow2`` beside it;
  the volume id never changes. Taking it renames the volume's file to the layer's name
  and makes a new empty overlay under the volume's name (``extended_l2=on,
  cluster_size=128k``, the storage's preallocation). Deleting the oldest snapshot
  commits its child into it and renames it to the child's name; deleting another one
  rebases its child onto its parent. Rollback is to the newest snapshot only: the
  volume's file is replaced by a new empty overlay on it.
- raw and vmdk images, paths outside storages, and storages whose snapshots are their
  own (btrfs, ZFS, LVM-thin, Ceph) or need LVM's tools: refused, with the reason.

Every file step here can run again after an interruption and ends in the same state,
so a killed operation is completed by running it once more (:mod:`.snapshot_journal`).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qdisk import storage
from qdisk.config.drive import Drive, parse_drive
from qdisk.config.vmconfig import drive_items
from qdisk.errors import InvalidInputError, ToolError
from qdisk.image.file import ImageError
from qdisk.image.info import ImageInfo, create_image, read_chain, read_image
from qdisk.qemu.nodes import Disk, is_volume_chain, resolve_disk
from qdisk.settings import Tools
from qdisk.storage import StorageConfig
from qdisk.storage.chains import layer_snapshot, snapshot_file_name
from qdisk.storage.schema import Layout
from qdisk.system.tools import run
from qdisk.vm.errors import VmError, VmRefusedError

# pve-storage's overlays of a volume chain: extended L2 entries (subclusters) and 128 KiB
# clusters, which is also what lets a qcow2 image with a backing file be preallocated.
CHAIN_OVERLAY_OPTIONS = {"extended_l2": True, "cluster_size": 128 * 1024}
# pve-storage's preallocation of a qcow2 image where the storage sets none.
DEFAULT_QCOW2_PREALLOCATION = "metadata"
# qdisk's own files beside a volume during a change of its chain (an overlay, a link).
TEMPORARY_PREFIX = ".qdisk-"


class Method(enum.Enum):
    INTERNAL = "internal"  # qcow2 snapshots inside the image
    CHAIN = "chain"        # snapshot-as-volume-chain: one qcow2 layer per snapshot


class SnapshotRefusedError(VmRefusedError):
    """A snapshot operation cannot be done as asked; nothing was changed."""


@dataclass(frozen=True)
class SnapshotVolume:
    """A volume that takes part in a snapshot operation: the drive that names it (key and
    string of the config section the operation works on) and how its snapshots are made."""

    key: str
    text: str
    disk: Disk
    method: Method

    @property
    def drive(self) -> Drive:
        return self.disk.drive

    @property
    def volid(self) -> str:
        return self.drive.file

    @property
    def path(self) -> Path:
        assert self.disk.path is not None
        return Path(self.disk.path)

    def layer_path(self, snapshot: str) -> Path:
        """The file of this volume's layer for ``snapshot`` (volume chains)."""
        assert self.disk.volume is not None
        return self.path.parent / snapshot_file_name(self.disk.volume, snapshot)

    @property
    def temporary_path(self) -> Path:
        """qdisk's temporary overlay while a running chain is changed."""
        return self.path.parent / f"{TEMPORARY_PREFIX}overlay-{self.path.name}"

    @property
    def link_path(self) -> Path:
        """The name a layer's link has before it replaces its child's image."""
        return self.path.parent / f"{TEMPORARY_PREFIX}link-{self.path.name}"

    def layer_of(self, path: str) -> str | None:
        """The snapshot whose layer ``path`` is (None: the volume itself, or no layer)."""
        assert self.disk.volume is not None
        return layer_snapshot(self.disk.volume, path)


def snapshot_volume(key: str, text: str, storage_config: StorageConfig) -> SnapshotVolume | None:
    """The drive ``key: text`` as a volume of a snapshot, None when it takes no part (a
    CD-ROM, an empty drive, ``unusedN``); raises SnapshotRefusedError when it cannot have
    snapshots, naming the drive and the reason."""
    if key.startswith("unused"):
        return None
    drive = parse_drive(key, text).drive
    if drive.is_cdrom or drive.file == "none":
        return None
    if storage.parse_volume_id(drive.file) is None:
        raise SnapshotRefusedError(f"{key}: '{drive.file}' is not a storage volume: Proxmox VE "
                                   "has no snapshots of it (snapshot feature is not available)")
    try:
        disk = resolve_disk(drive, storage_config)
    except InvalidInputError as error:
        raise SnapshotRefusedError(str(error)) from None
    assert disk.storage is not None
    target = disk.storage
    where = f"{key}: volume '{drive.file}' on storage '{target.id}' (type {target.type})"
    if target.kind.layout not in (Layout.DIR, Layout.LVM):
        raise SnapshotRefusedError(f"{where}: its snapshots are the storage's own, made with "
                                   f"{target.type}'s tools, which qdisk does not run")
    if disk.format != "qcow2":
        raise SnapshotRefusedError(f"{where}: a {disk.format} image cannot have snapshots "
                                   "(only qcow2 can)")
    if target.kind.layout is Layout.LVM:
        raise SnapshotRefusedError(f"{where}: its snapshot layers are logical volumes: that "
                                   f"{target.kind.allocation_refused}")
    storage.check_mounted(target)
    return SnapshotVolume(key, text, disk, Method.CHAIN if is_volume_chain(disk) else Method.INTERNAL)


def snapshot_volumes(values: dict[str, str], storage_config: StorageConfig) -> list[SnapshotVolume]:
    """The volumes of a config section that take part in its snapshots, in qemu-server's
    drive order; refuses with every drive that cannot have snapshots."""
    volumes, problems = [], []
    for key, text in drive_items(values):
        try:
            volume = snapshot_volume(key, text, storage_config)
        except InvalidInputError as error:
            problems.append(str(error))
            continue
        if volume is not None:
            volumes.append(volume)
    if problems:
        raise SnapshotRefusedError("\n".join(problems))
    return volumes


# --- internal qcow2 snapshots -------------------------------------------------------------


def internal_snapshots(tools: Tools, path: Path) -> list[str]:
    """The names of the internal snapshots in a qcow2 image (read shared: the image may be
    in use by a running VM)."""
    try:
        output = run([tools.qemu_img, "info", "--output=json", "-U", "-f", "qcow2", str(path)]).stdout
    except ToolError as error:
        raise VmError(f"{path}: cannot list its snapshots: {error}") from error
    return [str(snapshot["name"]) for snapshot in json.loads(output).get("snapshots", [])]


def qemu_img_snapshot(tools: Tools, action: str, name: str, path: Path) -> None:
    """``qemu-img snapshot -c|-d|-a NAME PATH`` (a stopped VM's image)."""
    _qemu_img(tools, "snapshot", action, name, str(path))


def _qemu_img(tools: Tools, *args: str) -> None:
    try:
        run([tools.qemu_img, *args], timeout=None)
    except ToolError as error:
        raise VmError(f"qemu-img {args[0]} failed: {error}") from error


# --- volume chains ----------------------------------------------------------------------------


def chain_preallocation(volume: SnapshotVolume) -> str:
    assert volume.disk.storage is not None
    return volume.disk.storage.options.get("preallocation", DEFAULT_QCOW2_PREALLOCATION)


def ensure_overlay(tools: Tools, path: Path, backing: Path, *, preallocation: str = "off") -> None:
    """A qcow2 overlay at ``path`` on ``backing`` (named relative to it, as pve-storage
    does), as big as ``backing``; one left by an interrupted creation is made again."""
    if path.exists():
        try:
            if read_image(path, format="qcow2", tools=tools).backing_filename == backing.name:
                return
        except ImageError:
            pass
        path.unlink()
    size = read_image(backing, format="qcow2", tools=tools).virtual_size
    create_image(tools, path, "qcow2", size,
                 options={"backing_file": backing.name, "backing_fmt": "qcow2",
                          **CHAIN_OVERLAY_OPTIONS, "preallocation": preallocation})


@dataclass(frozen=True)
class LayerPlace:
    """Where a snapshot's layer sits in its volume's chain: the image above it (``child``:
    the snapshot name, None for the volume itself) and whether a snapshot layer lies below
    it (``parent``). The oldest layer has no parent."""

    child: str | None
    child_path: Path
    parent: str | None
    parent_path: Path | None
    # The chain reaches the layer's file under another name (the child's, which it took).
    alias: bool = False


def chain_of(volume: SnapshotVolume, tools: Tools) -> list[ImageInfo]:
    try:
        return read_chain(volume.path, format="qcow2", tools=tools)
    except ImageError as error:
        raise VmError(f"{volume.key}: cannot read the volume chain of '{volume.volid}': "
                      f"{error}") from None


def layer_place(volume: SnapshotVolume, snapshot: str, tools: Tools) -> LayerPlace | None:
    """Where the layer of ``snapshot`` sits, None when the chain has no such layer."""
    chain = chain_of(volume, tools)
    layer = volume.layer_path(snapshot)
    for depth in range(1, len(chain)):
        if _same_file(chain[depth].filename, layer):
            if Path(chain[depth].filename).name != layer.name:
                return LayerPlace(None, Path(chain[depth].filename), None, None, alias=True)
            below = chain[depth + 1] if depth + 1 < len(chain) else None
            parent = volume.layer_of(below.filename) if below is not None else None
            above = chain[depth - 1].filename
            return LayerPlace(volume.layer_of(above) if depth > 1 else None, Path(above), parent,
                              Path(below.filename) if parent is not None and below else None)
    return None


def newest_layer(volume: SnapshotVolume, tools: Tools) -> str | None:
    """The snapshot the volume's own image is the overlay of (rollback goes only there)."""
    chain = chain_of(volume, tools)
    return volume.layer_of(chain[1].filename) if len(chain) > 1 else None


def _same_file(name: str, path: Path) -> bool:
    try:
        return os.path.samefile(name, path)
    except OSError:
        return False


def keep_as_layer(volume: SnapshotVolume, snapshot: str) -> None:
    """The volume's image gets the layer's name too (a hard link: a running QEMU's node
    keeps a name that is its file until it is replaced)."""
    layer = volume.layer_path(snapshot)
    if not layer.exists():
        # A link to a symbolic link (a volume that is one): what pve-storage's rename gives.
        os.link(volume.path, layer, follow_symlinks=False)


def new_overlay(tools: Tools, volume: SnapshotVolume, snapshot: str) -> None:
    """The volume's name goes to a new empty overlay on the layer of ``snapshot``."""
    layer = volume.layer_path(snapshot)
    if _same_file(str(volume.path), layer):
        volume.path.unlink()
    ensure_overlay(tools, volume.path, layer, preallocation=chain_preallocation(volume))


def create_layer(tools: Tools, volume: SnapshotVolume, snapshot: str) -> None:
    """Snapshot ``snapshot`` of a stopped volume chain: the volume's image becomes the
    layer, a new overlay takes the volume's name (pve-storage renames; a link and an
    unlink end the same)."""
    keep_as_layer(volume, snapshot)
    new_overlay(tools, volume, snapshot)


def give_child_name(volume: SnapshotVolume, snapshot: str, child: Path) -> None:
    """The layer of ``snapshot``, which holds its child's data now, takes the child's name
    (a link put over it: the layer's own name stays until its node is gone)."""
    layer = volume.layer_path(snapshot)
    if not layer.exists() or _same_file(str(child), layer):
        return
    volume.link_path.unlink(missing_ok=True)
    os.link(layer, volume.link_path, follow_symlinks=False)
    os.replace(volume.link_path, child)


def delete_layer(tools: Tools, volume: SnapshotVolume, snapshot: str) -> None:
    """Remove the layer of ``snapshot`` from a stopped volume chain, as pve-storage: the
    oldest one takes its child's data (``qemu-img commit``) and name, any other one is
    merged into its child (``qemu-img rebase`` onto its parent) and deleted."""
    layer = volume.layer_path(snapshot)
    volume.link_path.unlink(missing_ok=True)
    if not layer.exists():
        return
    place = layer_place(volume, snapshot, tools)
    if place is None or place.alias:
        # No chain reads it (its child was rebased past it), or it is a second name of
        # the child that took its data: the file goes, or just the name.
        layer.unlink()
        return
    if place.parent_path is None:
        _qemu_img(tools, "commit", "-q", "-f", "qcow2", str(place.child_path))
        os.replace(layer, place.child_path)
        return
    _qemu_img(tools, "rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", place.parent_path.name,
              str(place.child_path))
    layer.unlink()


def rollback_layer(tools: Tools, volume: SnapshotVolume, snapshot: str) -> None:
    """Back to ``snapshot`` (the newest layer): the volume's file is replaced by a new empty
    overlay on it."""
    volume.path.unlink(missing_ok=True)
    ensure_overlay(tools, volume.path, volume.layer_path(snapshot),
                   preallocation=chain_preallocation(volume))


def merge_temporary_overlay(tools: Tools, volume: SnapshotVolume) -> None:
    """What a live change interrupted with QEMU gone left: the temporary overlay on the
    volume's image, which holds the guest's writes since it went on top, committed into
    it (once more does no harm: the same data). One cut short while made is deleted."""
    temporary = volume.temporary_path
    if not temporary.exists():
        return
    try:
        complete = read_image(temporary, format="qcow2", tools=tools).backing_filename == volume.path.name
    except ImageError:
        complete = False
    if complete:
        _qemu_img(tools, "commit", "-q", "-f", "qcow2", str(temporary))
    temporary.unlink()


def layer_files(directory: Path, names: Iterable[str]) -> list[Path]:
    """The snapshot layers (``snap-<snap>-<name>``) and qdisk's temporary files
    (``.qdisk-*-<name>``) of the images ``names`` in ``directory``: what goes with them."""
    wanted = tuple(f"-{name}" for name in names)
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir()
                  if path.name.startswith(("snap-", TEMPORARY_PREFIX)) and path.name.endswith(wanted))

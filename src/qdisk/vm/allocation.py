"""New images for a drive in the allocation syntax (``STORAGE:SIZE_IN_GiB``), as
qemu-server's ``create_disks`` makes them, journaled so a killed command leaves none."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qdisk import storage
from qdisk.config.drive import Drive, make_drive
from qdisk.config.vmconfig import VmConfig
from qdisk.errors import DriveError, Problem, ToolError
from qdisk.image.info import create_image
from qdisk.settings import Settings
from qdisk.storage import StorageConfig
from qdisk.system import fileio
from qdisk.vm import journal
from qdisk.vm.errors import VmError
from qdisk.vm.volumes import remove_images, volnames_on

log = logging.getLogger(__name__)

# qemu-server's fixed sizes, whatever SIZE_IN_GiB says: an EFI disk holds the OVMF vars of
# its efitype (OVMF_VARS_4M.fd, OVMF_VARS_4M.ms.fd with pre-enrolled keys: 528 KiB;
# OVMF_VARS.fd, efitype's default 2m: 128 KiB), a TPM state swtpm's raw 4 MiB
# (TPMSTATE_DISK_SIZE).
EFI_VARS_SIZES = {"4m": 540672, "2m": 131072}
DEFAULT_EFITYPE = "2m"
TPM_STATE_SIZE = 4 * 2**20


class Allocator:
    """Makes the new images of one change and remembers them: the change removes them
    again if it fails (:func:`allocating`)."""

    def __init__(self, settings: Settings, config: VmConfig, storage_config: StorageConfig) -> None:
        self.settings = settings
        self.config = config
        self.storage_config = storage_config
        self.created: list[Path] = []

    def allocated(self, drive: Drive) -> Drive:
        """The drive with its ``STORAGE:SIZE`` file replaced by a new image's volume id and
        ``size=`` (``format=`` dropped: the name carries it), or the drive itself."""
        allocation = storage.parse_allocation(drive.file)
        if allocation is None or drive.is_cdrom or drive.interface == "unused":
            return drive
        fmt = str(drive.get("format")
                  or self.storage_config.get(allocation.storage_id).default_format)
        size = allocation.size
        if drive.interface == "efidisk":
            size = EFI_VARS_SIZES[str(drive.get("efitype") or DEFAULT_EFITYPE)]
        elif drive.interface == "tpmstate":
            size, fmt = TPM_STATE_SIZE, "raw"  # swtpm reads raw state only
        if fmt not in storage.ALLOCATABLE_FORMATS:
            raise DriveError(drive.key, [Problem(
                "format", f"cannot allocate a {fmt} image (possible: "
                          f"{', '.join(storage.ALLOCATABLE_FORMATS)})")])
        if size <= 0:
            raise DriveError(drive.key, [Problem(
                "file", f"'{drive.file}': the size of a new disk must be more than 0 GiB")])
        vmid = self.config.vmid
        target = storage.allocatable_storage(self.storage_config, allocation.storage_id)
        volname = storage.free_disk_volname(target, vmid, fmt,
                                            taken=volnames_on(self.config, target.id))
        path = storage.image_path(target, volname)
        fileio.private_dir(path.parent, home=self.settings.home)
        # Journaled before qemu-img runs: a command killed from here on leaves a record the
        # next command on this VM cleans up, and a failed qemu-img leaves nothing behind
        # that would shift the next disk number.
        self.created.append(path)
        journal.record(self.settings, vmid, self.created)
        try:
            image = create_image(self.settings.tools, path, fmt, size)
        except ToolError as error:
            raise VmError(f"VM {vmid}: {drive.key}: no new image on storage '{target.id}': "
                          f"{error}") from error
        log.info("%s: created %s (%d bytes)", drive.key, path, image.virtual_size)
        values = {name: value for name, value in drive.values.items() if name != "format"}
        values.update(file=f"{target.id}:{volname}", size=image.virtual_size)
        return make_drive(drive.key, values).drive


@contextmanager
def allocating(settings: Settings, config: VmConfig,
               storage_config: StorageConfig) -> Iterator[Allocator]:
    """An allocator for one change: its images are removed again if the block fails, kept
    once it ends (the config names them by then)."""
    allocator = Allocator(settings, config, storage_config)
    try:
        yield allocator
    except BaseException:
        remove_images(allocator.created)
        raise
    finally:
        journal.end(settings, config.vmid)

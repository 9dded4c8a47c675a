"""The errors of VM operations; each names the VM."""

from __future__ import annotations

from qdisk.errors import InvalidInputError, QdiskError


class VmError(QdiskError):
    """A VM operation failed (QEMU would not start or stop, an image could not be made)."""


class VmRefusedError(InvalidInputError):
    """The request does not fit the VM's state (already running, not running, exists,
    a disk in use, a run file in the way)."""


class InvalidPendingError(InvalidInputError):
    """A hand-edited ``[PENDING]`` value is invalid; nothing was applied or written."""


class StaleDigestError(VmRefusedError):
    """The config changed since the client read it (its digest no longer matches)."""

    def __init__(self) -> None:
        # Proxmox VE's message (PVE::Tools::assert_if_modified).
        super().__init__("detected modified configuration - file changed by other user? Try again.")

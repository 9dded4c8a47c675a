"""The errors of VM operations; each names the VM."""

from __future__ import annotations

from collections.abc import Sequence

from qdisk.errors import InvalidInputError, QdiskError


class VmError(QdiskError):
    """A VM operation failed (QEMU would not start or stop, an image could not be made)."""


class VmRefusedError(InvalidInputError):
    """The request does not fit the VM's state (already running, not running, exists,
    a disk in use, a run file in the way)."""


class InvalidOptionsError(InvalidInputError):
    """Values of a ``create``/``set`` are invalid; nothing was written. ``keyed``: per
    problem the key it concerns and its line, which names the key too (``memory: ...``,
    ``scsi0.size: ...``, ``unknown option 'x'``)."""

    def __init__(self, vmid: int, keyed: Sequence[tuple[str, str]]) -> None:
        self.vmid = vmid
        self.keyed = tuple(keyed)
        self.problems = tuple(line for _, line in self.keyed)
        super().__init__(f"VM {vmid}: invalid values, nothing changed:\n"
                         + "\n".join(f"  {line}" for line in self.problems))


class InvalidPendingError(InvalidInputError):
    """A hand-edited ``[PENDING]`` value is invalid; nothing was applied or written."""


class StaleDigestError(VmRefusedError):
    """The config changed since the client read it (its digest no longer matches)."""

    def __init__(self) -> None:
        # Proxmox VE's message (PVE::Tools::assert_if_modified).
        super().__init__("detected modified configuration - file changed by other user? Try again.")

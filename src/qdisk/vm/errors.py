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
    """Values of a ``create``/``set`` are invalid; nothing was written. One line per problem,
    each naming the key (``memory: ...``, ``scsi0.size: ...``)."""

    def __init__(self, vmid: int, problems: Sequence[str]) -> None:
        self.vmid = vmid
        self.problems = tuple(problems)
        super().__init__(f"VM {vmid}: invalid values, nothing changed:\n"
                         + "\n".join(f"  {line}" for line in self.problems))


class InvalidPendingError(InvalidInputError):
    """A hand-edited ``[PENDING]`` value is invalid; nothing was applied or written."""

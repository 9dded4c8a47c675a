"""The exception hierarchy: one root, and precise subclasses that carry context.

Every module raises a subclass of :class:`QdiskError`. The CLI turns them into
messages and exit codes in one place (``qdisk.cli.common.run``): an
:class:`InvalidInputError` (the user's input is wrong, or the request is refused)
exits 2, every other :class:`QdiskError` exits 1; the web API answers 400 and 500 likewise
(``qdisk.web.http``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class QdiskError(Exception):
    """Root of every error qdisk raises. ``str(error)`` is a complete user message."""


class InvalidInputError(QdiskError):
    """The user's input is invalid, or the request is refused (exit code 2)."""


class ConfigFileError(InvalidInputError):
    """A config file (a VM's, storage.cfg) is not text qdisk can read; names the file and line."""


class ToolError(QdiskError):
    """An external program (qemu-img, QEMU, fio) failed or could not be run."""

    def __init__(self, tool: str, message: str, *, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.message = message
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class Problem:
    """One problem of a property string: the property it concerns (None: the whole string,
    which a :class:`DriveError` names by its drive key)."""

    property: str | None
    message: str


class DriveError(InvalidInputError):
    """A drive string (``scsi0: ...``) is invalid; carries every problem found, not just the first."""

    def __init__(self, key: str, problems: Sequence[Problem]) -> None:
        self.key = key
        # Every problem names what it concerns: one of the whole string, or of the key
        # itself, names the drive key.
        self.problems = tuple(Problem(key, p.message) if p.property is None else p
                              for p in problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem, each naming the drive and the property: ``scsi0.size: ...``
        (``scsi0: ...`` for a problem of the drive as a whole)."""
        key = self.key or "''"  # an empty key must still show where the message starts
        return [f"{key}: {p.message}" if p.property == self.key else f"{key}.{p.property}: {p.message}"
                for p in self.problems]


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

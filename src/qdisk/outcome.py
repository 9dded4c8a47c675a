"""What a change did to each drive of a running VM, as both services report it (the home's
``vm set``, :mod:`qdisk.vm.changes`; a Proxmox VE host's ``pve set`` and ``pve apply``,
:mod:`qdisk.pve.changes`, :mod:`qdisk.pve.apply`), and the one rule that turns the changes
the running VM did not take into an error.

The rule (:func:`change_error`): a change QEMU could not be asked about (its monitor
failed, the volume no longer resolves) is a failure, :class:`ChangeFailedError` (exit 1,
HTTP 500); else a change QEMU refused is the request's fault, :class:`ChangeRefusedError`
(exit 2, HTTP 400). Either lists each drive's reason under its key, QEMU's message as QEMU
wrote it; the front ends show ``str(error)`` (a line per drive) or the reasons by key.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from qdisk.errors import InvalidInputError, QdiskError


class Outcome(enum.Enum):
    APPLIED = "applied"    # the running VM has the change now (or QEMU never sees it)
    UNCHANGED = "unchanged"  # the running VM had it already: nothing was sent
    PENDING = "pending"    # the change waits for the next start
    LEFT = "left"          # the disk cannot take the change live: left as it is
    SKIPPED = "skipped"    # not a qcow2 disk: nothing to apply
    REFUSED = "refused"    # QEMU refused the change: nothing changed
    FAILED = "failed"      # QEMU could not be asked (its monitor failed): not known


@dataclass(frozen=True)
class DriveOutcome:
    """One drive's outcome: its key, what happened, messages for the user (each naming the
    key) and, when QEMU refused or could not be asked, the reason (QEMU's message, or why)."""

    key: str
    outcome: Outcome
    messages: tuple[str, ...] = ()
    reason: str = ""

    @property
    def not_taken(self) -> bool:
        """The running VM did not take the change (refused, or not known to have)."""
        return self.outcome in (Outcome.REFUSED, Outcome.FAILED)


class ChangeError(QdiskError):
    """Changes a running VM did not take: ``headline`` (names the VM and what follows for
    the changes), and ``reasons`` (drive key -> reason)."""

    def __init__(self, headline: str, reasons: Mapping[str, str]) -> None:
        self.headline = headline
        self.reasons = dict(reasons)
        super().__init__(f"{headline}:\n" + "\n".join(f"  {key}: {reason}"
                                                       for key, reason in self.reasons.items()))


class ChangeFailedError(ChangeError):
    """QEMU could not be asked about one of the changes (exit 1, HTTP 500)."""


class ChangeRefusedError(ChangeError, InvalidInputError):
    """QEMU refused one of the changes, and took or was not asked about the others
    (exit 2, HTTP 400)."""


def change_error(subject: str, outcomes: Iterable[DriveOutcome], *,
                 consequence: str) -> ChangeError | None:
    """The error for the ``outcomes`` the running VM did not take, None when it took every
    change it was asked to; ``subject`` names the VM, ``consequence`` says what becomes of
    the changes (``the change stays pending``)."""
    not_taken = [outcome for outcome in outcomes if outcome.not_taken]
    reasons = {outcome.key: outcome.reason for outcome in not_taken}
    if any(outcome.outcome is Outcome.FAILED for outcome in not_taken):
        return ChangeFailedError(f"{subject}: not applied to the running VM, {consequence}",
                                 reasons)
    if not_taken:
        return ChangeRefusedError(f"{subject}: QEMU refused, {consequence}", reasons)
    return None

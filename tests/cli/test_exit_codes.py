"""The one place that decides exit codes (qdisk.cli.common.run): 0, 1, 2 and 130, never a traceback."""

from __future__ import annotations

from typing import NoReturn

import pytest

from qdisk import bench
from qdisk.errors import InvalidInputError, QdiskError
from qdisk.outcome import DriveOutcome, Outcome, change_error

from cli_helpers import RunQdisk


def _raising(error: BaseException) -> object:
    def run(*args: object, **kwargs: object) -> NoReturn:
        raise error

    return run


@pytest.mark.parametrize(("error", "code", "message"), [
    (InvalidInputError("scsi0: refused"), 2, "qdisk: scsi0: refused\n"),
    (QdiskError("qemu-img: failed"), 1, "qdisk: qemu-img: failed\n"),
    (KeyboardInterrupt(), 130, "qdisk: interrupted\n"),
    (RuntimeError("bug"), 1, "qdisk: internal error: RuntimeError: bug\n"),
])
def test_errors_become_one_message_and_an_exit_code(
        run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch,
        error: BaseException, code: int, message: str) -> None:
    monkeypatch.delenv("QDISK_DEBUG", raising=False)
    monkeypatch.setattr(bench, "run_bench", _raising(error))
    result = run_qdisk("bench", "--size", "1G")
    assert (result.exit_code, result.stdout) == (code, "")
    # click prints a newline before its Abort on Ctrl-C; the message is the last line.
    assert result.stderr.endswith(message)
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(run_qdisk: RunQdisk) -> None:
    result = run_qdisk("vm", "start")
    assert result.exit_code == 2
    assert "Missing argument 'VMID'" in result.stderr


REFUSED = DriveOutcome("scsi0", Outcome.REFUSED, reason="Could not reopen qcow2 layer: boom")
FAILED = DriveOutcome("scsi1", Outcome.FAILED, reason="QEMU's monitor failed: EOFError")


@pytest.mark.parametrize(("outcomes", "code", "headline"), [
    ([REFUSED, DriveOutcome("scsi2", Outcome.APPLIED)], 2, "VM 100: QEMU refused, it stays"),
    ([REFUSED, FAILED], 1, "VM 100: not applied to the running VM, it stays"),
])
def test_changes_a_running_vm_did_not_take_decide_the_exit_code(
        run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch,
        outcomes: list[DriveOutcome], code: int, headline: str) -> None:
    error = change_error("VM 100", outcomes, consequence="it stays")
    assert error is not None
    assert (error.headline, error.reasons) == (
        headline, {outcome.key: outcome.reason for outcome in outcomes if outcome.not_taken})
    monkeypatch.setattr(bench, "run_bench", _raising(error))
    result = run_qdisk("bench", "--size", "1G")
    assert result.exit_code == code
    assert result.stderr.endswith(
        "".join(f"  {key}: {reason}\n" for key, reason in error.reasons.items()))


def test_changes_the_running_vm_took_or_that_wait_are_no_error() -> None:
    outcomes = [DriveOutcome(key, outcome) for key, outcome in
                (("scsi0", Outcome.APPLIED), ("scsi1", Outcome.PENDING), ("scsi2", Outcome.LEFT))]
    assert change_error("VM 100", outcomes, consequence="it stays") is None

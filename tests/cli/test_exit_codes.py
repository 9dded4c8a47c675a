"""The one place that decides exit codes (qdisk.cli.main): 0, 1, 2 and 130, never a traceback."""

from __future__ import annotations

from typing import NoReturn

import pytest

from qdisk import bench
from qdisk.errors import InvalidInputError, QdiskError

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

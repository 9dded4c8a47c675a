"""Types and paths for tests that run the ``qdisk`` CLI (``from cli_helpers import ...``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The console script of the environment running the tests, for tests that need processes.
QDISK = str(Path(sys.executable).parent / "qdisk")


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


# The run_qdisk fixture: run_qdisk("vm", "start", "100") -> CliResult.
RunQdisk = Callable[..., CliResult]

"""Helpers any test area can import (``from qemu_helpers import qemu_img``)."""

from __future__ import annotations

import subprocess


def qemu_img(*args: str) -> str:
    """Run the real qemu-img; fail the test with its stderr if it fails."""
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"qemu-img {' '.join(args)}: {result.stderr}"
    return result.stdout

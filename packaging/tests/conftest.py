"""The installed package's tests (packaging/test-deb runs them in a fresh Debian 13 root,
as root, after `apt install ./qdisk_<version>_all.deb`). qdisk comes from
/usr/lib/python3/dist-packages; only the simulated Proxmox VE host of tests/pve (a test
helper) comes from the checkout."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(CHECKOUT / "tests"), str(CHECKOUT / "tests" / "pve")]

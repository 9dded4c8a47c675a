"""Fixtures of the access tests: key pairs made once per session (openssl, as pve-cluster
makes them) and an access tree per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from access_helpers import AccessTree, KeyPair, check_perl_modules, make_key_pair


@pytest.fixture(scope="session")
def key_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """``current``, ``next`` (after a rotation) and ``foreign`` (another cluster's)."""
    check_perl_modules()
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_key_pair(directory, name) for name in ("current", "next", "foreign")}


@pytest.fixture
def access(tmp_path: Path) -> AccessTree:
    tree = AccessTree(tmp_path / "root")
    (tree.pve / "nodes" / "pve1" / "qemu-server").mkdir(parents=True)
    return tree

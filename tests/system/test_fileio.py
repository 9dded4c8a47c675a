"""Atomic writes and locks: the guarantees the VM config store relies on."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from qdisk.system.fileio import LockTimeout, atomic_write, locked


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "100.conf"
    atomic_write(target, "old\n", home=tmp_path)
    atomic_write(target, "new\n", home=tmp_path)
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["100.conf"]


def _append_line(args: tuple[Path, int]) -> None:
    path, number = args
    with locked(path.with_suffix(".lock"), home=path.parent):
        old = path.read_text() if path.exists() else ""
        atomic_write(path, old + f"line{number}\n", home=path.parent)


def test_locked_read_modify_write_loses_nothing(tmp_path: Path) -> None:
    target = tmp_path / "counter"
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.map(_append_line, [(target, n) for n in range(40)])
    assert sorted(target.read_text().split()) == sorted(f"line{n}" for n in range(40))


def test_lock_timeout_names_the_file(tmp_path: Path) -> None:
    lock = tmp_path / "100.lock"
    with locked(lock, home=tmp_path):
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                with locked(lock, home=tmp_path, timeout=0.2):
                    os._exit(1)
            except LockTimeout as error:
                os._exit(0 if str(lock) in str(error) else 2)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0

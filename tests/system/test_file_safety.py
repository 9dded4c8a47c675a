"""qdisk never writes through a link and keeps its home private whatever the umask: real
links, hard links and FIFOs where qdisk expects its files, the real CLI and a real QEMU."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qdisk.image.file import ImageError
from qdisk.image.info import create_image
from qdisk.settings import Tools
from qdisk.system.fileio import (
    DIR_MODE,
    FILE_MODE,
    LINK_REFUSED,
    UnsafePathError,
    atomic_write,
    locked,
    private_dir,
    truncated_output,
)

from cli_helpers import RunQdisk

PRECIOUS = "a file qdisk must not touch\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_0() -> Iterator[None]:
    """The most permissive umask, restored afterwards: qdisk's modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the home that links will point at; it must stay unchanged."""
    path = tmp_path / "victim"
    path.write_text(PRECIOUS)
    path.chmod(0o644)
    return path


def _assert_untouched(victim: Path) -> None:
    assert victim.read_text() == PRECIOUS
    assert _mode(victim) == 0o644


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)


# --- fileio on its own ---------------------------------------------------------------------


def test_atomic_write_replaces_a_link_not_its_target(tmp_path: Path, victim: Path,
                                                      umask_0: None) -> None:
    target = tmp_path / "qemu-server" / "100.conf"
    _link(target, victim)
    target.parent.chmod(DIR_MODE)  # made under umask 0

    atomic_write(target, "name: new\n", home=tmp_path)

    _assert_untouched(victim)
    assert not target.is_symlink() and target.read_text() == "name: new\n"
    assert _mode(target) == FILE_MODE


def _lock(path: Path, home: Path) -> None:
    with locked(path, home=home, timeout=0.1):
        pass


def _log(path: Path, home: Path) -> None:
    truncated_output(path, home=home).close()


IN_PLACE_WRITERS = pytest.mark.parametrize("write", [_lock, _log], ids=["lock", "log"])


@IN_PLACE_WRITERS
def test_in_place_writes_refuse_a_link(write: Callable[[Path, Path], None], tmp_path: Path,
                                       victim: Path) -> None:
    path = tmp_path / "run" / "100.log"
    _link(path, victim)

    with pytest.raises(UnsafePathError) as refused:
        write(path, tmp_path)

    assert str(refused.value) == f"{path}: {LINK_REFUSED}"
    _assert_untouched(victim)


@IN_PLACE_WRITERS
def test_in_place_writes_refuse_a_dangling_link_without_creating_its_target(
        write: Callable[[Path, Path], None], tmp_path: Path) -> None:
    path = tmp_path / "lock" / "100.lock"
    absent = tmp_path / "absent"
    _link(path, absent)

    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        write(path, tmp_path)

    assert not absent.exists()


@IN_PLACE_WRITERS
def test_in_place_writes_refuse_a_hard_link(write: Callable[[Path, Path], None], tmp_path: Path,
                                            victim: Path) -> None:
    path = tmp_path / "100.lock"
    os.link(victim, path)

    with pytest.raises(UnsafePathError, match="has 2 hard links; qdisk does not write through links"):
        write(path, tmp_path)

    _assert_untouched(victim)


@IN_PLACE_WRITERS
def test_in_place_writes_refuse_a_fifo_without_blocking(write: Callable[[Path, Path], None],
                                                        tmp_path: Path) -> None:
    path = tmp_path / "100.log"
    os.mkfifo(path)

    with pytest.raises(UnsafePathError, match="100.log: is not a regular file"):
        write(path, tmp_path)


@IN_PLACE_WRITERS
def test_in_place_writes_make_an_existing_file_private(write: Callable[[Path, Path], None],
                                                       tmp_path: Path) -> None:
    path = tmp_path / "100.log"
    path.write_text("old\n")
    path.chmod(0o666)

    write(path, tmp_path)

    assert _mode(path) == FILE_MODE


def test_log_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "100.log"
    path.write_text("the last start's messages\n")

    with truncated_output(path, home=tmp_path) as log:
        log.write(b"new\n")

    assert path.read_text() == "new\n"


def test_directories_are_created_private_inside_and_outside_the_home(tmp_path: Path,
                                                                     umask_0: None) -> None:
    home = tmp_path / "missing" / "home"
    storage = tmp_path / "storage"
    storage.mkdir(mode=0o775)

    private_dir(home / "run", home=home)
    private_dir(storage / "images" / "100", home=home)

    assert [_mode(path) for path in (home.parent, home, home / "run")] == [DIR_MODE] * 3
    # The user's storage keeps its mode; what qdisk adds to it is private.
    assert (_mode(storage), _mode(storage / "images"), _mode(storage / "images" / "100")) == \
        (0o775, DIR_MODE, DIR_MODE)


def test_a_relative_home_is_checked_for_absolute_paths_inside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home" / "storage").mkdir(parents=True, mode=0o777)
    (tmp_path / "home" / "storage").chmod(0o777)

    with pytest.raises(UnsafePathError, match="storage: other users can write this directory"):
        private_dir(tmp_path / "home" / "storage" / "local", home=Path("home"))


def test_a_home_linked_to_a_shared_directory_names_that_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    home = tmp_path / "home"
    home.symlink_to(shared)

    with pytest.raises(UnsafePathError) as refused:
        private_dir(home / "run", home=home)

    assert str(refused.value) == (f"{home}: other users can write this directory ({shared}, mode "
                                  f"1777), so they could change qdisk's files: run 'chmod go-w "
                                  f"{shared}'")
    assert not (shared / "run").exists()


def test_a_file_where_the_home_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home").write_text(PRECIOUS)

    with pytest.raises(UnsafePathError, match="home: is not a directory"):
        atomic_write(tmp_path / "home" / "storage.cfg", "", home=tmp_path / "home")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_home_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir(mode=DIR_MODE)
    os.chown(lock_dir, 65534, 65534)

    with pytest.raises(UnsafePathError, match=r"lock: belongs to another user \(uid 65534\)"):
        _lock(lock_dir / "100.lock", tmp_path)

    assert list(lock_dir.iterdir()) == []


def test_create_image_refuses_a_dangling_link(tmp_path: Path) -> None:
    path = tmp_path / "vm-100-disk-0.qcow2"
    absent = tmp_path / "absent"
    path.symlink_to(absent)

    with pytest.raises(ImageError, match="is a symbolic link"):
        create_image(Tools(), path, "qcow2", 2**20)

    assert not absent.exists()


# --- the CLI -------------------------------------------------------------------------------

def _ok(run_qdisk: RunQdisk, *args: str) -> str:
    result = run_qdisk(*args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _refused(run_qdisk: RunQdisk, *args: str) -> str:
    result = run_qdisk(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    return result.stderr


def _not_running(run_qdisk: RunQdisk) -> None:
    assert json.loads(_ok(run_qdisk, "vm", "status", "100", "--json"))["status"] == "stopped"


@pytest.mark.qemu
def test_a_fresh_home_is_private_under_umask_0(vm_home: Path, run_qdisk: RunQdisk,
                                               umask_0: None) -> None:
    vm_home.rmdir()  # qdisk makes the home itself
    _ok(run_qdisk, "vm", "create", "100", "--memory", "64", "--scsi0", "local:0.01,format=qcow2")
    _ok(run_qdisk, "vm", "start", "100")

    directories = [Path(parent) for parent, _, _ in os.walk(vm_home)]
    assert {"run", "lock", "qemu-server", "storage", "100"} <= {path.name for path in directories}
    assert {str(path): _mode(path) for path in directories} == \
        {str(path): DIR_MODE for path in directories}
    own_files = [vm_home / name for name in ("storage.cfg", "qemu-server/100.conf", "lock/100.lock",
                                             "run/100.log", "run/100.state.json")]
    assert {str(path): _mode(path) for path in own_files} == \
        {str(path): FILE_MODE for path in own_files}
    _ok(run_qdisk, "vm", "stop", "100")


@pytest.mark.qemu
def test_start_refuses_a_link_for_the_log(vm_home: Path, run_qdisk: RunQdisk, victim: Path) -> None:
    _ok(run_qdisk, "vm", "create", "100", "--memory", "64")
    log = vm_home / "run" / "100.log"
    _link(log, victim)

    message = _refused(run_qdisk, "vm", "start", "100")

    assert message == f"qdisk: {log}: is a symbolic link; qdisk does not write through links\n"
    _assert_untouched(victim)
    _not_running(run_qdisk)


def test_a_dangling_link_for_the_lock_is_refused(vm_home: Path, run_qdisk: RunQdisk,
                                                 config_file: Path) -> None:
    _ok(run_qdisk, "vm", "create", "100", "--memory", "64", "--name", "one")
    absent = vm_home.parent / "absent"
    _link(vm_home / "lock" / "100.lock", absent)

    message = _refused(run_qdisk, "vm", "set", "100", "--name", "two")

    assert f"{vm_home / 'lock' / '100.lock'}: is a symbolic link" in message
    assert not absent.exists()
    assert "name: one\n" in config_file.read_text()


def test_a_link_for_the_config_is_replaced_not_written_through(
        vm_home: Path, run_qdisk: RunQdisk, config_file: Path, victim: Path) -> None:
    _ok(run_qdisk, "vm", "create", "100", "--memory", "64", "--name", "one")
    victim.write_text(config_file.read_text())
    _link(config_file, victim)
    before = victim.read_text()

    _ok(run_qdisk, "vm", "set", "100", "--name", "two")

    assert victim.read_text() == before
    assert not config_file.is_symlink() and "name: two\n" in config_file.read_text()
    assert _mode(config_file) == FILE_MODE


def test_a_dangling_link_for_storage_cfg_is_replaced(vm_home: Path, run_qdisk: RunQdisk) -> None:
    absent = vm_home.parent / "absent"
    _link(vm_home / "storage.cfg", absent)

    _ok(run_qdisk, "vm", "list")

    assert not absent.exists()
    storage_cfg = vm_home / "storage.cfg"
    assert not storage_cfg.is_symlink() and storage_cfg.read_text().startswith("dir: local\n")


@pytest.mark.qemu
def test_links_for_the_state_file_are_replaced_not_written_through(
        vm_home: Path, run_qdisk: RunQdisk, victim: Path) -> None:
    _ok(run_qdisk, "vm", "create", "100", "--memory", "64", "--scsi0", "local:0.01,format=qcow2")
    state = vm_home / "run" / "100.state.json"
    _link(state, victim)
    _ok(run_qdisk, "vm", "start", "100")
    _assert_untouched(victim)
    assert not state.is_symlink()
    scsi0 = json.loads(_ok(run_qdisk, "vm", "config", "100", "--json"))["scsi0"]
    # Read through the link (reading is harmless), so the change is applied live.
    victim.write_text(state.read_text())
    before = victim.read_text()
    _link(state, victim)

    # A live cache change rewrites the state file.
    _ok(run_qdisk, "vm", "set", "100", "--scsi0", f"{scsi0},qcow2-l2-cache-size=1")

    assert victim.read_text() == before
    assert not state.is_symlink() and _mode(state) == FILE_MODE
    nodes = json.loads(state.read_text())["disks"]["scsi0"]["nodes"]
    assert [node["cache"] for node in nodes] == [{"l2-cache-size": 2**20}]
    _ok(run_qdisk, "vm", "stop", "100")


@pytest.mark.qemu
@pytest.mark.parametrize(("directory", "command"), [
    ("", ("set", "100", "--name", "two")),
    ("lock", ("set", "100", "--name", "two")),
    ("qemu-server", ("set", "100", "--name", "two")),
    ("storage", ("set", "100", "--scsi1", "local:0.01")),
    ("run", ("start", "100")),
])
def test_a_home_other_users_can_write_is_refused(directory: str, command: tuple[str, ...],
                                                 vm_home: Path, run_qdisk: RunQdisk,
                                                 config_file: Path) -> None:
    _ok(run_qdisk, "vm", "create", "100", "--memory", "64", "--name", "one")
    unsafe = vm_home / directory if directory else vm_home
    unsafe.mkdir(exist_ok=True)
    unsafe.chmod(0o777 if directory else 0o775)
    before = config_file.read_text()

    message = _refused(run_qdisk, "vm", *command)

    mode = "0777" if directory else "0775"
    assert (f"{unsafe}: other users can write this directory (mode {mode}), so they could "
            f"change qdisk's files: run 'chmod go-w {unsafe}'\n") in message
    assert config_file.read_text() == before
    unsafe.chmod(DIR_MODE)
    _not_running(run_qdisk)

"""How qdisk writes its own files: atomically, never through a link, private whatever the umask.

qdisk often runs as root, so every file and directory it writes goes through this module,
which follows these rules:

- **A private home.** Before each write, every directory from the home (``QDISK_HOME``, or
  a private work directory) down to the file's own is created 0700 where it is missing.
  Where it exists, it is refused when another user could change it: a group or world
  write bit, or an owner other than us or root. Such a user could swap qdisk's file for a
  link between any check and the write. Directories outside the home, such as a storage's
  ``images/<vmid>``, are created 0700 where missing and otherwise left as they are: they
  belong to the user.
- **Modes.** Files are 0600 and directories 0700. The modes are set with ``fchmod`` after
  creation, because the umask masks the mode given to ``open`` and ``mkdir``.
- **Never through a link.** A whole-file write (VM configs, ``storage.cfg``, the state
  file) goes to a new temporary file (``mkstemp``: ``O_EXCL``, which never follows a link)
  that is fsynced and renamed over the path. A link found there is replaced, and its
  target is left untouched; a reader sees the old file or the new one, never a torn one.
  A file written in place (QEMU's log, lock files) is opened with ``O_NOFOLLOW``, and a
  link there is refused (exit 2), as is anything but a regular file with one name.
  Refusing is right for those two. The link is not qdisk's, and renaming over a lock file
  would let two commands hold "the" lock at once.

Read-modify-write cycles hold an exclusive ``flock`` on a lock file beside the config, so
parallel writers queue up instead of losing each other's changes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from qdisk.errors import InvalidInputError, QdiskError

DIR_MODE = 0o700
FILE_MODE = 0o600
LINK_REFUSED = "is a symbolic link; qdisk does not write through links"


class LockTimeout(QdiskError):
    """Another qdisk command held the lock for too long."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__(f"{path}: still locked by another command after {timeout:g} s")
        self.path = path


class UnsafePathError(InvalidInputError):
    """A path where qdisk writes is not safe to write: a link, a file with other names, or a
    directory other users can change. Names the path and how to fix it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class FileWriteError(QdiskError):
    """The system refused a write (permissions, disk full, ...); names the path."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"{error.filename or path}: cannot write: {error.strerror or error}")
        self.path = path


@contextmanager
def _reported(path: Path) -> Iterator[None]:
    """The system's refusal of a write as a message naming the path, not a traceback."""
    try:
        yield
    except OSError as error:
        raise FileWriteError(path, error) from None


def private_dir(directory: Path, *, home: Path) -> None:
    """Make sure ``directory`` exists and only we can change the part of it inside ``home``.

    Refuses (``UnsafePathError``) a directory of the home that another user could change.
    """
    home = home.absolute()  # storage paths in storage.cfg are absolute, QDISK_HOME may not be
    try:
        inside = directory.absolute().relative_to(home).parts
    except ValueError:
        _make_dirs(directory)
        return
    for depth in range(len(inside) + 1):
        step = home.joinpath(*inside[:depth])
        if not _make_dirs(step):
            _check_private(step)


def _make_dirs(path: Path) -> bool:
    """Create ``path`` and its missing parents, each 0700; whether ``path`` was created."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError:
        _make_dirs(path.parent)
        return _make_dirs(path)
    # Through a descriptor of the directory just made, so a swapped-in link is not followed.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)
    return True


def _check_private(directory: Path) -> None:
    # stat follows a link: a home moved elsewhere through a link is checked where it lives.
    info = os.stat(directory)
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(directory, "is not a directory")
    if mode & 0o022:
        # The fix applies where the directory lives, not to a link leading there.
        real = directory.resolve() if directory.is_symlink() else directory
        where = f"{real}, " if real != directory else ""
        raise UnsafePathError(directory, f"other users can write this directory ({where}mode "
                                         f"{mode:04o}), so they could change qdisk's files: run "
                                         f"'chmod go-w {real}'")
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafePathError(directory, f"belongs to another user (uid {info.st_uid}), who could "
                                         f"change qdisk's files: use a QDISK_HOME of your own")


def atomic_write(path: Path, text: str, *, home: Path) -> None:
    """Replace ``path`` (a file under ``home``) with ``text``, 0600, never half-written."""
    with _reported(path):
        private_dir(path.parent, home=home)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                os.fchmod(tmp.fileno(), FILE_MODE)
                tmp.write(text)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        # The rename itself must reach the disk too.
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def truncated_output(path: Path, *, home: Path) -> BinaryIO:
    """``path`` (a file under ``home``) emptied, or created 0600, open for writing in place:
    for a writer that needs the file itself, such as a child process's stderr."""
    with _reported(path):
        private_dir(path.parent, home=home)
        fd = _open_own_file(path, os.O_WRONLY)
        try:
            # Only now: O_TRUNC would have emptied the file before it was checked.
            os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
    return os.fdopen(fd, "wb")


@contextmanager
def locked(lock_path: Path, *, home: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (a file under ``home``, created if needed)."""
    with _reported(lock_path):
        private_dir(lock_path.parent, home=home)
        fd = _open_own_file(lock_path, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(lock_path, timeout) from None
                time.sleep(0.01)
        yield
    finally:
        # Closing the descriptor releases the lock, also when the process dies.
        os.close(fd)


def held_by_another(path: Path) -> bool:
    """Whether a process holds an exclusive flock on ``path`` (another program's lock file,
    opened read-only and never created). The probe holds a shared lock for no longer than
    the probe: its owner's next flock waits microseconds at most."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _open_own_file(path: Path, flags: int) -> int:
    """A descriptor of qdisk's own file ``path``, created 0600 if missing. Refuses a link (even
    a dangling one: its target is not created), a hard-linked file and anything but a
    regular file; O_NONBLOCK keeps a FIFO found there from blocking the open."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP and path.is_symlink():
            raise UnsafePathError(path, LINK_REFUSED) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader
            raise UnsafePathError(path, "is not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(path, "is not a regular file")
        if info.st_nlink > 1:
            raise UnsafePathError(path, f"has {info.st_nlink} hard links; qdisk does not write "
                                        f"through links")
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd

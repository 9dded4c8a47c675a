"""An image file opened for reading its metadata, and the error every image problem raises.

Opened read-only with plain reads: no subprocess and no lock, so it works on an image a
running QEMU holds. Every read is checked against the file's size first, so a damaged
header can never make the reader ask for gigabytes or read past the end.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from qdisk.errors import InvalidInputError

# ioctl FS_IOC_FSGETXATTR and its struct fsxattr (xflags, extsize, nextents, projid,
# cowextsize, 8 bytes of padding): QEMU's file driver shows a non-zero extsize (XFS).
FS_IOC_FSGETXATTR = 0x801C581F
FSXATTR = struct.Struct("=5I8x")

# Enough for a qcow2 header, its usual extensions and a backing name: one read per image.
FIRST_READ_BYTES = 4096


class ImageError(InvalidInputError):
    """An image cannot be read or is not usable; names the file and the problem, one line."""

    def __init__(self, filename: str, problem: str) -> None:
        super().__init__(f"{filename}: {problem}")
        self.filename = filename
        self.problem = problem


class ImageFile:
    """An open image: its size, and positioned reads served from its first block when they
    fall in it (the header, its extensions and the backing name usually do)."""

    def __init__(self, filename: str, fd: int) -> None:
        self.filename = filename
        self.fd = fd
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise ImageError(filename, "is a directory, not an image")
        # QEMU's protocol driver for it (qemu-img's "protocol type").
        self.protocol = "file"
        if stat.S_ISREG(status.st_mode):
            self.size = status.st_size
        elif stat.S_ISBLK(status.st_mode):
            self.size = os.lseek(fd, 0, os.SEEK_END)
            self.protocol = "host_device"
        else:
            raise ImageError(filename, "is neither a regular file nor a block device")
        # Bytes the file occupies on its storage, as qemu-img's "disk size".
        self.actual_size = status.st_blocks * 512
        self.first = self._pread(0, min(self.size, FIRST_READ_BYTES))

    @property
    def extent_size_hint(self) -> int | None:
        """The file system's extent size hint for the file, None when unset or unsupported."""
        try:
            attributes = fcntl.ioctl(self.fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size))
        except OSError:
            return None
        return FSXATTR.unpack(attributes)[1] or None

    def _pread(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as error:
            raise ImageError(self.filename, f"cannot be read: {error.strerror}") from None

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``: fewer at the end of the file."""
        if offset + length <= len(self.first):
            return self.first[offset:offset + length]
        return self._pread(offset, max(0, min(length, self.size - offset)))

    def read_exact(self, offset: int, length: int, what: str) -> bytes:
        """``length`` bytes at ``offset``; refused without reading when the file is shorter."""
        if offset + length > self.size or len(data := self.read(offset, length)) < length:
            raise ImageError(self.filename, past_the_end(what, offset, length, self.size))
        return data


def past_the_end(what: str, offset: int, length: int, file_size: int) -> str:
    return (f"{what} (offset {offset}, {length} bytes) extends past the end of the file "
            f"({file_size} bytes): the file is truncated or the header is damaged")


def open_image(filename: str) -> int:
    """A read-only descriptor of ``filename``; every failure an ImageError in the user's terms."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (ImageFile refuses it).
        return os.open(filename, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(filename, "does not exist") from None
    except PermissionError:
        raise ImageError(filename, "is not readable (permission denied)") from None
    except OSError as error:
        raise ImageError(filename, f"cannot be opened: {error.strerror}") from None
    except ValueError:
        raise ImageError(repr(filename), "is not a file name (it contains a NUL byte)") from None

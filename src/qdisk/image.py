"""Image facts: a native qcow2 header reader, raw sizes, backing chains, `qemu-img create`.

The reader opens the file read-only and uses plain reads: no subprocess and no lock,
so it works on an image a running QEMU holds. It reads the header, the header
extensions, the backing file name and the part of the L1 table that maps the virtual
disk, nothing else, and checks every offset and count against QEMU's limits and the
file's size before reading. Only a non-file
protocol (``nbd:...``, ``json:{...}``) or a format it does not parse (vmdk, vdi, ...)
goes through ``qemu-img info``. The checks follow QEMU's ``qcow2_do_open`` (QEMU 7.2),
so an image QEMU refuses is refused here with the reason.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from qdisk.errors import InvalidInputError, ToolError
from qdisk.fileio import LINK_REFUSED
from qdisk.settings import Tools
from qdisk.tools import run

QCOW2_MAGIC = b"QFI\xfb"
# QEMU's MIN_CLUSTER_BITS / MAX_CLUSTER_BITS (block/qcow2.h).
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
# QCOW_MAX_L1_SIZE (block/qcow2.h): 32 MiB of 8-byte L1 entries.
L1_ENTRY_BYTES = 8
MAX_L1_BYTES = 32 * 1024 * 1024
MAX_L1_ENTRIES = MAX_L1_BYTES // L1_ENTRY_BYTES
# QCOW_MAX_REFTABLE_SIZE, and QCOW_MAX_SNAPSHOTS of at least sizeof(QCowSnapshotHeader).
MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024
MAX_SNAPSHOTS = 65536
SNAPSHOT_HEADER_BYTES = 40
# The backing file name field holds at most 1023 bytes (QEMU's "Backing file name too long").
MAX_BACKING_NAME_BYTES = 1023
MAX_REFCOUNT_ORDER = 6
# Extended L2 entries need at least 16 KiB clusters (32 subclusters of >= 512 bytes).
MIN_EXTENDED_L2_CLUSTER_BITS = 14
# Bits 9-55 of an L1 entry: the offset of the L2 table, 0 when none is allocated.
L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
# QEMU works in 512-byte sectors: the virtual size it uses is rounded down to them.
SECTOR_SIZE = 512

# Header layout (docs/interop/qcow2.txt): the 72 bytes of version 2, then version 3's 32.
_HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
_HEADER_V3 = struct.Struct(">QQQII")
V2_HEADER_LENGTH = _HEADER_V2.size
V3_HEADER_LENGTH = V2_HEADER_LENGTH + _HEADER_V3.size
# Enough for the header, its usual extensions and a backing name: one read per image.
_FIRST_READ_BYTES = 4096

# Incompatible feature bits.
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTENDED_L2 = 1 << 4
KNOWN_INCOMPAT = (INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION
                  | INCOMPAT_EXTENDED_L2)
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

# Header extension types.
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_DATA_FILE = 0x44415441
EXTENSION_NAMES = {EXT_BACKING_FORMAT: "backing-format", EXT_DATA_FILE: "data-file",
                   0x6803F857: "feature-names", 0x0537BE77: "crypto-header",
                   0x23852875: "bitmaps"}
# QEMU keeps the backing format in a 16-byte buffer, NUL included.
MAX_BACKING_FORMAT_BYTES = 15

CRYPT_METHODS = {0: "none", 1: "aes", 2: "luks"}
COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}

# Magics of formats QEMU probes that this module does not parse (offset, bytes).
_OTHER_FORMAT_MAGICS: tuple[tuple[str, int, bytes], ...] = (
    ("qed", 0, b"QED\x00"),
    ("vmdk", 0, b"KDMV"),
    ("vmdk", 0, b"# Disk DescriptorFile"),
    ("vpc", 0, b"conectix"),
    ("vhdx", 0, b"vhdxfile"),
    ("luks", 0, b"LUKS\xba\xbe"),
    ("vdi", 0x40, b"\x7f\x10\xda\xbe"),
    ("parallels", 0, b"WithoutFreeSpace"),
    ("parallels", 0, b"WithouFreSpacExt"),
    ("bochs", 0, b"Bochs Virtual HD Image"),
)


class ImageError(InvalidInputError):
    """An image cannot be read or is not usable; names the file and the problem, one line."""

    def __init__(self, filename: str, problem: str) -> None:
        super().__init__(f"{filename}: {problem}")
        self.filename = filename
        self.problem = problem


def l2_entry_bytes(extended_l2: bool) -> int:
    """Bytes of one L2 entry: 16 with extended L2 (a subcluster bitmap follows), else 8."""
    return 16 if extended_l2 else 8


@dataclass(frozen=True)
class HeaderExtension:
    """One qcow2 header extension as found: its type, and where its data lies in the file."""

    type: int
    offset: int
    length: int

    @property
    def name(self) -> str:
        return EXTENSION_NAMES.get(self.type, f"{self.type:#010x}")


@dataclass(frozen=True)
class Qcow2Header:
    """Every field of a qcow2 header; version 2 images get version 3's implied values."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = V2_HEADER_LENGTH
    compression_type: int = 0

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def refcount_bits(self) -> int:
        return 1 << self.refcount_order

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_EXTENDED_L2)

    @property
    def l2_entry_bytes(self) -> int:
        return l2_entry_bytes(self.extended_l2)

    @property
    def l1_entries_needed(self) -> int:
        """L1 entries that map the virtual size: one per L2 table's worth of clusters."""
        bytes_per_l2_table = self.cluster_size * (self.cluster_size // self.l2_entry_bytes)
        return -(-self.size // bytes_per_l2_table)

    @property
    def compat(self) -> str:
        """qemu-img's name for the version: ``0.10`` (version 2) or ``1.1`` (version 3)."""
        return "0.10" if self.version == 2 else "1.1"


@dataclass(frozen=True)
class ImageInfo:
    """The facts of one image that cache planning and QEMU command generation need."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int | None = None
    cluster_size: int | None = None
    refcount_bits: int | None = None
    extended_l2: bool = False
    backing_filename: str | None = None
    backing_path: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    data_file_raw: bool = False
    dirty: bool = False
    corrupt: bool = False
    lazy_refcounts: bool = False
    compression_type: str | None = None
    # Count of L1 entries that point to an L2 table: the L2 memory the image can fill.
    allocated_l2_tables: int | None = None
    # The parsed header and its extensions (native qcow2 reads only).
    header: Qcow2Header | None = None
    header_extensions: tuple[HeaderExtension, ...] = ()
    # True when the facts came from `qemu-img info` rather than the native reader.
    from_qemu_img: bool = False

    @property
    def is_qcow2(self) -> bool:
        return self.format == "qcow2"

    @property
    def compat(self) -> str | None:
        return self.header.compat if self.header else None

    @property
    def l2_entry_bytes(self) -> int:
        return l2_entry_bytes(self.extended_l2)

    @property
    def allocated_l2_bytes(self) -> int | None:
        """Bytes of L2 tables the image has: the most an L2 cache can ever hold for it."""
        if self.allocated_l2_tables is None or self.cluster_size is None:
            return None
        return self.allocated_l2_tables * self.cluster_size


def has_protocol(name: str) -> bool:
    """QEMU's ``path_has_protocol``: a ``:`` before any ``/`` (``nbd:``, ``json:``, ``rbd:``)."""
    prefix = name.split("/", 1)[0]
    return ":" in prefix


def resolve_backing(naming_image: str, backing_name: str) -> str:
    """A backing name as QEMU resolves it: relative names against the naming image's directory."""
    if os.path.isabs(backing_name) or has_protocol(backing_name) or has_protocol(naming_image):
        return backing_name
    return os.path.join(os.path.dirname(naming_image), backing_name)


class _ImageFile:
    """An open image: its size, and positioned reads served from its first block when they
    fall in it (the header, its extensions and the backing name usually do)."""

    def __init__(self, filename: str, fd: int) -> None:
        self.filename = filename
        self.fd = fd
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise ImageError(filename, "is a directory, not an image")
        if stat.S_ISREG(status.st_mode):
            self.size = status.st_size
        elif stat.S_ISBLK(status.st_mode):
            self.size = os.lseek(fd, 0, os.SEEK_END)
        else:
            raise ImageError(filename, "is neither a regular file nor a block device")
        # Bytes the file occupies on its storage, as qemu-img's "disk size".
        self.actual_size = status.st_blocks * 512
        self.first = self._pread(0, min(self.size, _FIRST_READ_BYTES))

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
            raise ImageError(self.filename, _past_the_end(what, offset, length, self.size))
        return data


def _past_the_end(what: str, offset: int, length: int, file_size: int) -> str:
    return (f"{what} (offset {offset}, {length} bytes) extends past the end of the file "
            f"({file_size} bytes): the file is truncated or the header is damaged")


def read_image(path: str | os.PathLike[str], *, format: str | None = None,
               tools: Tools | None = None) -> ImageInfo:
    """The facts of the image at ``path``.

    ``format`` is what the caller expects (a backing format from the header, a drive's
    ``format=``): ``"qcow2"`` refuses a file without the qcow2 magic, ``"raw"`` skips probing.
    Without it the format is probed like QEMU does: qcow2 magic, other known magics
    (through ``qemu-img info``), else raw.
    """
    filename = os.fspath(path)
    if filename.startswith("file:"):
        filename = filename[len("file:"):]
    elif has_protocol(filename):
        return _qemu_img_info(filename, format, tools)
    fd = _open(filename)
    try:
        image = _ImageFile(filename, fd)
        if format == "raw":
            return _raw_info(image)
        if image.first[:4] == QCOW2_MAGIC:
            return _qcow2_info(image)
        if QCOW2_MAGIC.startswith(image.first):
            # Too short for any image: QEMU would call it raw, but a disk of a few bytes
            # is a qcow2 image cut short (or an empty file) far more often than a disk.
            raise ImageError(filename, "is empty: not a disk image" if not image.size else
                             f"is truncated: {image.size} bytes, shorter than a qcow2 header")
        if format == "qcow2":
            raise ImageError(filename, "is not a qcow2 image (no qcow2 magic 'QFI\\xfb')")
        if format is not None or _other_format(image.first) is not None:
            return _qemu_img_info(filename, format, tools)
        return _raw_info(image)
    finally:
        os.close(fd)


def _open(filename: str) -> int:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just after).
        return os.open(filename, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(filename, "does not exist") from None
    except PermissionError:
        raise ImageError(filename, "is not readable (permission denied)") from None
    except OSError as error:
        raise ImageError(filename, f"cannot be opened: {error.strerror}") from None
    except ValueError:
        raise ImageError(repr(filename), "is not a file name (it contains a NUL byte)") from None


def _other_format(first_block: bytes) -> str | None:
    for name, offset, magic in _OTHER_FORMAT_MAGICS:
        if first_block[offset:offset + len(magic)] == magic:
            return name
    return None


def _raw_info(image: _ImageFile) -> ImageInfo:
    return ImageInfo(filename=image.filename, format="raw", virtual_size=image.size,
                     actual_size=image.actual_size)


def _parse_header(image: _ImageFile) -> Qcow2Header:
    name = image.filename
    file_size = image.size
    if file_size < V2_HEADER_LENGTH:
        raise ImageError(name, f"is truncated: {file_size} bytes, shorter than a qcow2 header")
    _magic, *v2_fields = _HEADER_V2.unpack(image.read(0, V2_HEADER_LENGTH))
    version = v2_fields[0]
    if version == 1:
        raise ImageError(name, "is a qcow version 1 image: not supported (convert it to qcow2)")
    if version not in (2, 3):
        raise ImageError(name, f"has qcow2 version {version}: only versions 2 and 3 exist")
    # Version 2 implies: no feature bits, 16-bit refcounts, a 72-byte header, zlib.
    v3_fields: tuple[int, ...] = (0, 0, 0, 4, V2_HEADER_LENGTH)
    compression_type = 0
    if version == 3:
        if file_size < V3_HEADER_LENGTH:
            raise ImageError(name, f"is truncated: {file_size} bytes, shorter than a qcow2 "
                                   "version 3 header")
        v3_fields = _HEADER_V3.unpack(image.read(V2_HEADER_LENGTH, _HEADER_V3.size))
        header_length = v3_fields[-1]
        if header_length < V3_HEADER_LENGTH:
            raise ImageError(name, f"header_length {header_length} is below the minimum of "
                                   f"{V3_HEADER_LENGTH}")
        if header_length > file_size:
            raise ImageError(name, f"header_length {header_length} is past the end of the file "
                                   f"({file_size} bytes)")
        if header_length > V3_HEADER_LENGTH:
            compression_type = image.read(V3_HEADER_LENGTH, 1)[0]
    header = Qcow2Header(*(*v2_fields, *v3_fields, compression_type))
    _check_header(name, header, file_size)
    return header


def _check_header(name: str, header: Qcow2Header, file_size: int) -> None:
    """QEMU's own checks at open (qcow2_do_open), in user terms, and that the tables the
    header points to lie within the file (a truncated copy)."""
    if not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
        raise ImageError(name, f"cluster_bits {header.cluster_bits} is out of range "
                               f"({MIN_CLUSTER_BITS} to {MAX_CLUSTER_BITS})")
    cluster_size = header.cluster_size
    if header.header_length > cluster_size:
        raise ImageError(name, f"header_length {header.header_length} exceeds the cluster size "
                               f"({cluster_size})")
    unknown = header.incompatible_features & ~KNOWN_INCOMPAT
    if unknown:
        raise ImageError(name, f"uses unknown incompatible features (bits {unknown:#x}): "
                               "QEMU cannot open it")
    if header.refcount_order > MAX_REFCOUNT_ORDER:
        raise ImageError(name, f"refcount_order {header.refcount_order} is out of range "
                               f"(0 to {MAX_REFCOUNT_ORDER})")
    if header.crypt_method:
        method = CRYPT_METHODS.get(header.crypt_method)
        if method is None:
            raise ImageError(name, f"has an unknown encryption method {header.crypt_method}")
        raise ImageError(name, f"is encrypted ({method}): encrypted images are not supported")
    if header.extended_l2 and header.cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        raise ImageError(name, "has extended L2 entries with clusters below 16 KiB: QEMU "
                               "cannot open it")
    if header.compression_type not in COMPRESSION_TYPES:
        raise ImageError(name, f"has an unknown compression type {header.compression_type}")
    if header.compression_type and not header.incompatible_features & INCOMPAT_COMPRESSION:
        raise ImageError(name, "uses a compression type other than zlib without the "
                               "compression type feature bit")
    if header.refcount_table_clusters == 0:
        raise ImageError(name, "has no refcount table (refcount_table_clusters is 0)")
    _check_table(name, "refcount table", header.refcount_table_offset,
                 (header.refcount_table_clusters, "clusters"), cluster_size,
                 MAX_REFCOUNT_TABLE_BYTES, cluster_size, file_size)
    _check_table(name, "snapshot table", header.snapshots_offset,
                 (header.nb_snapshots, "snapshots"), SNAPSHOT_HEADER_BYTES,
                 MAX_SNAPSHOTS * SNAPSHOT_HEADER_BYTES, cluster_size, file_size)
    # Checked before the L1 table is read: an absurd l1_size never costs a read.
    _check_table(name, "L1 table", header.l1_table_offset, (header.l1_size, "entries"),
                 L1_ENTRY_BYTES, MAX_L1_BYTES, cluster_size, file_size)
    if header.l1_size < header.l1_entries_needed:
        raise ImageError(name, f"L1 table of {header.l1_size} entries is too small for the "
                               f"virtual size {header.size} (needs {header.l1_entries_needed})")
    if header.backing_file_offset:
        if header.backing_file_offset > cluster_size:
            raise ImageError(name, f"backing file name offset {header.backing_file_offset} lies "
                                   "outside the first cluster")
        if header.backing_file_size > MAX_BACKING_NAME_BYTES:
            raise ImageError(name, f"backing file name is too long ({header.backing_file_size} "
                                   f"bytes, at most {MAX_BACKING_NAME_BYTES})")


def _check_table(name: str, what: str, offset: int, count: tuple[int, str], entry_bytes: int,
                 max_bytes: int, cluster_size: int, file_size: int) -> None:
    """QEMU's qcow2_validate_table (a count limit, cluster alignment), and the file's end.

    ``count`` is the number of entries and what they are called (``(2, "entries")``).
    """
    entries, unit = count
    if entries > max_bytes // entry_bytes:
        raise ImageError(name, f"{what} of {entries} {unit} is too large "
                               f"(at most {max_bytes // entry_bytes})")
    if offset % cluster_size:
        raise ImageError(name, f"{what} offset {offset} is not aligned to a cluster")
    if entries and offset + entries * entry_bytes > file_size:
        raise ImageError(name, _past_the_end(what, offset, entries * entry_bytes, file_size))


def _read_extensions(image: _ImageFile, header: Qcow2Header) -> tuple[HeaderExtension, ...]:
    """The header extensions, which end at the backing name or else at the first cluster's end."""
    end = header.backing_file_offset or header.cluster_size
    offset = header.header_length
    extensions: list[HeaderExtension] = []
    while offset < end:
        # Past the end of the file QEMU reads zeros: an end-of-extensions marker.
        raw = image.read(offset, 8).ljust(8, b"\0")
        ext_type, length = struct.unpack(">II", raw)
        offset += 8
        if ext_type == EXT_END:
            break
        if offset > end or length > end - offset:
            raise ImageError(image.filename, f"header extension {ext_type:#010x} of {length} bytes "
                                             "is too large")
        extensions.append(HeaderExtension(ext_type, offset, length))
        offset += (length + 7) & ~7
    return tuple(extensions)


def _extension_text(image: _ImageFile, extension: HeaderExtension, what: str) -> str:
    data = image.read_exact(extension.offset, extension.length, what)
    return os.fsdecode(data.split(b"\0", 1)[0])


def _count_allocated_l2_tables(image: _ImageFile, header: Qcow2Header) -> int:
    """L1 entries that point to an L2 table, among those that map the virtual disk (the
    rest, left by a shrink, is nothing the guest or the cache can reach)."""
    entries = min(header.l1_size, header.l1_entries_needed)
    if not entries:
        return 0
    table = image.read_exact(header.l1_table_offset, entries * L1_ENTRY_BYTES, "L1 table")
    if table == bytes(len(table)):
        # A new image's L1 table is all zeros: a memcmp instead of decoding every entry.
        return 0
    # filter() skips the (usually many) empty entries at C speed.
    return sum(1 for entry in filter(None, struct.unpack(f">{entries}Q", table))
               if entry & L1E_OFFSET_MASK)


def _qcow2_info(image: _ImageFile) -> ImageInfo:
    header = _parse_header(image)
    name = image.filename
    extensions = _read_extensions(image, header) if header.version == 3 else ()
    backing_format = data_file = None
    for extension in extensions:
        if extension.type == EXT_BACKING_FORMAT:
            if extension.length > MAX_BACKING_FORMAT_BYTES:
                raise ImageError(name, f"backing format name of {extension.length} bytes is too "
                                       "long")
            backing_format = _extension_text(image, extension, "backing format name")
        elif extension.type == EXT_DATA_FILE:
            data_file = _extension_text(image, extension, "external data file name")
    backing_filename = None
    if header.backing_file_offset and header.backing_file_size:
        raw_name = image.read_exact(header.backing_file_offset, header.backing_file_size,
                                    "backing file name")
        # QEMU reads the name as a C string: a NUL ends it.
        backing_filename = os.fsdecode(raw_name.split(b"\0", 1)[0]) or None
    incompatible = header.incompatible_features
    return ImageInfo(
        filename=name,
        format="qcow2",
        virtual_size=header.size,
        actual_size=image.actual_size,
        cluster_size=header.cluster_size,
        refcount_bits=header.refcount_bits,
        extended_l2=header.extended_l2,
        backing_filename=backing_filename,
        backing_path=resolve_backing(name, backing_filename) if backing_filename else None,
        backing_format=backing_format,
        data_file=data_file,
        data_file_raw=bool(header.autoclear_features & AUTOCLEAR_DATA_FILE_RAW),
        dirty=bool(incompatible & INCOMPAT_DIRTY),
        corrupt=bool(incompatible & INCOMPAT_CORRUPT),
        lazy_refcounts=bool(header.compatible_features & COMPAT_LAZY_REFCOUNTS),
        compression_type=COMPRESSION_TYPES[header.compression_type],
        allocated_l2_tables=_count_allocated_l2_tables(image, header),
        header=header,
        header_extensions=extensions,
    )


def _qemu_img_info(filename: str, format: str | None, tools: Tools | None) -> ImageInfo:
    """The facts from ``qemu-img info`` (-U: shared, so a running QEMU's image works too)."""
    program = (tools or Tools.from_env()).qemu_img
    format_args = ["-f", format] if format else []
    try:
        output = run([program, "info", "--output=json", "-U", *format_args, filename]).stdout
    except ToolError as error:
        if error.returncode is None:
            raise
        # qemu-img ran and refused the image: a problem of the input, in QEMU's words.
        raise ImageError(filename, f"qemu-img info failed: {error.message}") from None
    try:
        info = json.loads(output)
    except ValueError:
        raise ToolError(program, f"info printed no JSON for {filename}") from None
    data: Mapping[str, object] = info.get("format-specific", {}).get("data", {})
    backing_filename = info.get("backing-filename")
    return ImageInfo(
        filename=filename,
        format=info["format"],
        virtual_size=int(info["virtual-size"]),
        actual_size=info.get("actual-size"),
        cluster_size=info.get("cluster-size"),
        refcount_bits=_optional_int(data.get("refcount-bits")),
        extended_l2=bool(data.get("extended-l2", False)),
        backing_filename=backing_filename,
        backing_path=(info.get("full-backing-filename")
                      or (resolve_backing(filename, backing_filename) if backing_filename
                          else None)),
        backing_format=info.get("backing-filename-format"),
        data_file=_optional_str(data.get("data-file")),
        data_file_raw=bool(data.get("data-file-raw", False)),
        dirty=bool(info.get("dirty-flag", False)),
        corrupt=bool(data.get("corrupt", False)),
        lazy_refcounts=bool(data.get("lazy-refcounts", False)),
        compression_type=_optional_str(data.get("compression-type")),
        from_qemu_img=True,
    )


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def read_chain(path: str | os.PathLike[str], *, format: str | None = None,
               tools: Tools | None = None) -> list[ImageInfo]:
    """The image and every image below it, top first; a loop or a missing file is an ImageError."""
    chain = [read_image(path, format=format, tools=tools)]
    seen = {_identity(chain[0].filename)}
    while (top := chain[-1]).backing_path is not None:
        backing = top.backing_path
        identity = _identity(backing)
        if identity in seen:
            loop = " -> ".join([*(image.filename for image in chain), backing])
            raise ImageError(chain[0].filename, f"the backing chain loops: {loop}")
        seen.add(identity)
        try:
            chain.append(read_image(backing, format=top.backing_format, tools=tools))
        except ImageError as error:
            # The resolved path only when it says more than the name.
            where = "" if backing == top.backing_filename else f" ({backing})"
            raise ImageError(top.filename, f"backing file {top.backing_filename!r}{where}: "
                                           f"{error.problem}") from None
    return chain


def _identity(filename: str) -> tuple[int, int] | str:
    """The same file under any name (device and inode), or the name for non-files."""
    try:
        status = os.stat(filename)
    except (OSError, ValueError):
        return filename
    return status.st_dev, status.st_ino


def create_image(tools: Tools, path: str | os.PathLike[str], fmt: str, size_bytes: int, *,
                 options: Mapping[str, str | int | bool] | None = None) -> ImageInfo:
    """Create an image with ``qemu-img create`` and return its facts.

    Refuses to overwrite an existing file: qemu-img would silently replace a disk.
    ``options`` are qemu-img ``-o`` options (``cluster_size``, ``backing_file``, ...).
    """
    filename = os.fspath(path)
    if not has_protocol(filename) and os.path.lexists(filename):
        # qemu-img would write through a link (its target truncated): refused like any file.
        raise ImageError(filename, LINK_REFUSED if os.path.islink(filename)
                         else "already exists: not overwriting it")
    argv = [tools.qemu_img, "create", "-q", "-f", fmt]
    if options:
        argv += ["-o", ",".join(f"{key}={_option_value(value)}" for key, value in options.items())]
    run([*argv, filename, str(size_bytes)])
    return read_image(filename, format=fmt, tools=tools)


def _option_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    # QEMU's option syntax escapes a comma by doubling it.
    return str(value).replace(",", ",,")

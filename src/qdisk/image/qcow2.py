"""The native qcow2 header reader (docs/interop/qcow2.txt, versions 2 and 3).

It reads the header, the header extensions, the backing file name and the part of the
L1 table that maps the virtual disk, nothing else, and checks every offset and count
against QEMU's limits and the file's size before reading. The checks follow QEMU's
``qcow2_do_open`` (QEMU 7.2), so an image QEMU refuses is refused here with the reason;
what ``qemu-img info`` accepts (it opens without I/O: no data file) is accepted.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from qdisk.image.file import ImageError, ImageFile, past_the_end

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
# QEMU works in 512-byte sectors: a qcow2 image's size is rounded down to them.
SECTOR_SIZE = 512

# Header layout: the 72 bytes of version 2, then version 3's 32, then the compression type.
_HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
_HEADER_V3 = struct.Struct(">QQQII")
V2_HEADER_LENGTH = _HEADER_V2.size
V3_HEADER_LENGTH = V2_HEADER_LENGTH + _HEADER_V3.size
# The header's virtual size: magic, version, backing offset and length, cluster bits, size.
_SIZE_FIELD_END = struct.calcsize(">4sIQII") + 8

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
    def virtual_size(self) -> int:
        """The size QEMU gives the disk: ``size`` in whole sectors (bs->total_sectors)."""
        return self.size // SECTOR_SIZE * SECTOR_SIZE

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_EXTENDED_L2)

    @property
    def uses_data_file(self) -> bool:
        """The guest's data lies in an external data file (the incompatible feature bit)."""
        return bool(self.incompatible_features & INCOMPAT_DATA_FILE)

    @property
    def l2_entry_bytes(self) -> int:
        return l2_entry_bytes(self.extended_l2)

    @property
    def l1_entries_needed(self) -> int:
        """L1 entries that map the header's size: one per L2 table's worth of clusters."""
        bytes_per_l2_table = self.cluster_size * (self.cluster_size // self.l2_entry_bytes)
        return -(-self.size // bytes_per_l2_table)

    @property
    def compat(self) -> str:
        """qemu-img's name for the version: ``0.10`` (version 2) or ``1.1`` (version 3)."""
        return "0.10" if self.version == 2 else "1.1"


@dataclass(frozen=True)
class Qcow2Image:
    """What the reader takes from a qcow2 file: its header, and what the header names."""

    header: Qcow2Header
    extensions: tuple[HeaderExtension, ...]
    backing_filename: str | None
    backing_format: str | None
    data_file: str | None
    # L1 entries that point to an L2 table: the L2 memory the image can fill.
    allocated_l2_tables: int


def read_qcow2(image: ImageFile) -> Qcow2Image:
    """The header of the qcow2 image ``image`` (its magic already seen), checked as QEMU does."""
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
    # An empty backing format (a NUL first) is no format: QEMU probes the backing file.
    return Qcow2Image(header, extensions, backing_filename, backing_format or None, data_file,
                      _count_allocated_l2_tables(image, header))


def peek_virtual_size(path: str) -> int | None:
    """The virtual size field of a qcow2 file's header (one small read: the node agent's
    cheap check for a resize); None when the file cannot be read or is not qcow2."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        start = os.pread(fd, _SIZE_FIELD_END, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(start) < _SIZE_FIELD_END or not start.startswith(QCOW2_MAGIC):
        return None
    return int.from_bytes(start[_SIZE_FIELD_END - 8:_SIZE_FIELD_END], "big")


def _parse_header(image: ImageFile) -> Qcow2Header:
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
        # The compression type byte counts only when the header is long enough to hold it.
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
    _check_compression_type(name, header)
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


def _check_compression_type(name: str, header: Qcow2Header) -> None:
    """QEMU's validate_compression_type: a known type, and the feature bit set exactly when
    the type is not zlib (a header too short for the type byte means zlib)."""
    if header.compression_type not in COMPRESSION_TYPES:
        raise ImageError(name, f"has an unknown compression type {header.compression_type}: "
                               "QEMU cannot open it")
    has_bit = bool(header.incompatible_features & INCOMPAT_COMPRESSION)
    if header.compression_type and not has_bit:
        raise ImageError(name, "uses a compression type other than zlib without the "
                               "compression type feature bit")
    if has_bit and not header.compression_type:
        raise ImageError(name, "has the compression type feature bit set with zlib compression "
                               "(a compression type of 0, or a header too short to hold one): "
                               "QEMU refuses it")


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
        raise ImageError(name, past_the_end(what, offset, entries * entry_bytes, file_size))


def _read_extensions(image: ImageFile, header: Qcow2Header) -> tuple[HeaderExtension, ...]:
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


def _extension_text(image: ImageFile, extension: HeaderExtension, what: str) -> str:
    data = image.read_exact(extension.offset, extension.length, what)
    return os.fsdecode(data.split(b"\0", 1)[0])


def _count_allocated_l2_tables(image: ImageFile, header: Qcow2Header) -> int:
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

"""Image facts: format probing, raw sizes, backing chains, `qemu-img info` and `create`.

qcow2 images are read natively (:mod:`qdisk.image.qcow2`), raw ones by their size: no
subprocess and no lock, so it works on an image a running QEMU holds. Only a non-file
protocol (``nbd:...``, ``json:{...}``) or another format (vmdk, vdi, ...) goes through
``qemu-img info``. The format of an image is what QEMU 7.2 opens it as: the one given
(a drive's ``format=``, ``qemu-img -f``, the backing format in the overlay's header),
used without probing; else probed as QEMU does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from qdisk.errors import ToolError
from qdisk.image.file import ImageError, ImageFile, open_image
from qdisk.image.qcow2 import (
    AUTOCLEAR_DATA_FILE_RAW,
    COMPAT_LAZY_REFCOUNTS,
    COMPRESSION_TYPES,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
    QCOW2_MAGIC,
    SECTOR_SIZE,
    HeaderExtension,
    Qcow2Header,
    l2_entry_bytes,
    read_qcow2,
)
from qdisk.qemuopts import option_value
from qdisk.settings import Tools
from qdisk.system.fileio import LINK_REFUSED
from qdisk.system.tools import run

# QEMU's driver names (qcow2, host_device, copy-on-read, ...).
_DRIVER_NAME = re.compile(r"[a-z0-9_-]+")

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


@dataclass(frozen=True)
class ImageInfo:
    """The facts of one image that cache planning and QEMU command generation need."""

    filename: str
    format: str
    # As QEMU sees it: a qcow2 size in whole sectors (rounded down); a raw file's size.
    virtual_size: int
    actual_size: int | None = None
    cluster_size: int | None = None
    refcount_bits: int | None = None
    extended_l2: bool = False
    backing_filename: str | None = None
    backing_path: str | None = None
    backing_format: str | None = None
    # The data file the header names (qemu-img's "data-file"), used or not.
    data_file: str | None = None
    # The header says the guest's data lies in an external data file (incompatible bit 2).
    uses_data_file: bool = False
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
    # The file or block device under the format (QEMU's protocol node, native reads only):
    # its driver, its length in whole sectors (rounded up) and its extent size hint.
    protocol: str | None = None
    file_length: int | None = None
    extent_size_hint: int | None = None

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


def read_image(path: str | os.PathLike[str], *, tools: Tools,
               format: str | None = None) -> ImageInfo:
    """The facts of the image at ``path``, as QEMU opens it.

    ``format`` is the format QEMU is told (a drive's ``format=``, a backing format from
    the overlay's header): it is used without probing, as QEMU does, whatever magic the
    file carries: ``"raw"`` reads a qcow2 file as raw, ``"qcow2"`` refuses a file without
    the qcow2 magic, any other format goes to ``qemu-img info -f`` (once the file is
    known to exist). Without it the format is probed like QEMU does: qcow2 magic, other
    known magics (``qemu-img info``), else raw.
    """
    filename = os.fspath(path)
    if filename.startswith("file:"):
        filename = filename[len("file:"):]
    elif has_protocol(filename):
        return _qemu_img_info(filename, format, tools)
    if format is not None and not _DRIVER_NAME.fullmatch(format):
        # A damaged header's bytes are no driver QEMU has ("Unknown driver").
        raise ImageError(filename, f"format {repr(os.fsencode(format))[1:]} is not the name of "
                                   "a QEMU driver")
    fd = open_image(filename)
    try:
        image = ImageFile(filename, fd)
        if format == "raw":
            return _raw_info(image)
        if format is not None and format != "qcow2":
            return _qemu_img_info(filename, format, tools)
        if image.first[:4] == QCOW2_MAGIC:
            return _qcow2_info(image)
        if QCOW2_MAGIC.startswith(image.first):
            # Too short for any image: QEMU would call it raw, but a disk of a few bytes
            # is a qcow2 image cut short (or an empty file) far more often than a disk.
            raise ImageError(filename, "is empty: not a disk image" if not image.size else
                             f"is truncated: {image.size} bytes, shorter than a qcow2 header")
        if format == "qcow2":
            raise ImageError(filename, "is not a qcow2 image (no qcow2 magic 'QFI\\xfb')")
        if _other_format(image.first) is not None:
            return _qemu_img_info(filename, None, tools)
        return _raw_info(image)
    finally:
        os.close(fd)


def _other_format(first_block: bytes) -> str | None:
    for name, offset, magic in _OTHER_FORMAT_MAGICS:
        if first_block[offset:offset + len(magic)] == magic:
            return name
    return None


def _file_length(image: ImageFile) -> int:
    # QEMU rounds a file up to whole sectors (qemu-img shows 1000 bytes as 1024).
    return -(-image.size // SECTOR_SIZE) * SECTOR_SIZE


def _raw_info(image: ImageFile) -> ImageInfo:
    length = _file_length(image)
    return ImageInfo(filename=image.filename, format="raw", virtual_size=length,
                     actual_size=image.actual_size, protocol=image.protocol, file_length=length,
                     extent_size_hint=image.extent_size_hint)


def _qcow2_info(image: ImageFile) -> ImageInfo:
    qcow2 = read_qcow2(image)
    header = qcow2.header
    incompatible = header.incompatible_features
    name = image.filename
    return ImageInfo(
        filename=name,
        format="qcow2",
        virtual_size=header.virtual_size,
        actual_size=image.actual_size,
        cluster_size=header.cluster_size,
        refcount_bits=header.refcount_bits,
        extended_l2=header.extended_l2,
        backing_filename=qcow2.backing_filename,
        backing_path=(resolve_backing(name, qcow2.backing_filename) if qcow2.backing_filename
                      else None),
        backing_format=qcow2.backing_format,
        data_file=qcow2.data_file,
        uses_data_file=header.uses_data_file,
        data_file_raw=bool(header.autoclear_features & AUTOCLEAR_DATA_FILE_RAW),
        dirty=bool(incompatible & INCOMPAT_DIRTY),
        corrupt=bool(incompatible & INCOMPAT_CORRUPT),
        lazy_refcounts=bool(header.compatible_features & COMPAT_LAZY_REFCOUNTS),
        compression_type=COMPRESSION_TYPES[header.compression_type],
        allocated_l2_tables=qcow2.allocated_l2_tables,
        header=header,
        header_extensions=qcow2.extensions,
        protocol=image.protocol,
        file_length=_file_length(image),
        extent_size_hint=image.extent_size_hint,
    )


def _qemu_img_info(filename: str, format: str | None, tools: Tools) -> ImageInfo:
    """The facts from ``qemu-img info`` (-U: shared, so a running QEMU's image works too)."""
    program = tools.qemu_img
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
        # qemu-img shows data-file-raw exactly when the image uses its data file.
        uses_data_file="data-file-raw" in data,
        data_file_raw=bool(data.get("data-file-raw", False)),
        dirty=bool(info.get("dirty-flag", False)),
        corrupt=bool(data.get("corrupt", False)),
        lazy_refcounts=bool(data.get("lazy-refcounts", False)),
        compression_type=_optional_str(data.get("compression-type")),
        from_qemu_img=True,
        # A protocol driver's own (format "file"): QEMU 8.0's, on XFS.
        extent_size_hint=_optional_int(data.get("extent-size-hint")),
    )


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def read_chain(path: str | os.PathLike[str], *, tools: Tools,
               format: str | None = None) -> list[ImageInfo]:
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


class DataFileError(ImageError):
    """A qcow2 image with an external data file: refused for use by a VM."""


def refuse_external_data_file(image: ImageInfo) -> None:
    """Raise DataFileError if QEMU would open a data file beside ``image`` (or refuse the image
    for the lack of one).

    QEMU opens the data file a qcow2 header names read-write, wherever it lies: a file
    outside the storage a user may not reach otherwise. Proxmox VE refuses every image
    whose header names one (``data-file`` in ``qemu-img info``), and so does qdisk.
    ``qdisk image info`` still shows such images; every image a VM opens is checked.
    """
    if image.data_file is not None or image.uses_data_file:
        named = image.data_file or "none named in its header"
        raise DataFileError(image.filename, f"qcow2 image with an external data file ({named}) is "
                                            "not supported (Proxmox VE refuses them)")
    if image.data_file_raw:
        raise DataFileError(image.filename, "qcow2 image marked data-file-raw without an external "
                                            "data file: QEMU refuses to open it")


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
        argv += ["-o", ",".join(f"{key}={option_value(value)}" for key, value in options.items())]
    run([*argv, filename, str(size_bytes)])
    return read_image(filename, format=fmt, tools=tools)

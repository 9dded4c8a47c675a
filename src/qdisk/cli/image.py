"""`qdisk image info`: the facts of an image from its header, like `qemu-img info`."""

from __future__ import annotations

import math
from typing import Any

import click

from qdisk.cli.common import echo_json, fail_json, pass_settings
from qdisk.errors import InvalidInputError
from qdisk.image.info import ImageInfo, read_chain, read_image
from qdisk.settings import Settings, Tools
from qdisk.system.tools import qemu_version

# qemu-img info shows the protocol node under the format (the file, the block device) as a
# child from QEMU 8.0 on: `info --json` has the shape of the local qemu-img's.
PROTOCOL_CHILD_SINCE = (8, 0)
# QEMU's protocol drivers of a local file or block device (format-specific type "file").
PROTOCOLS = ("file", "host_device")


@click.group(name="image")
def command() -> None:
    """Inspect disk images (native qcow2 header reader)."""


@command.command(name="info")
@click.option("--backing-chain", is_flag=True, help="Every image of the backing chain, top first.")
@click.option("--json", "as_json", is_flag=True, help="JSON with qemu-img's key names.")
@click.option("-f", "--format", "image_format", metavar="FORMAT",
              help="The format PATH must have (qcow2, raw, ...), as qemu-img's -f; default: probe.")
@click.argument("path")
@pass_settings
@click.pass_context
def info(ctx: click.Context, settings: Settings, backing_chain: bool, as_json: bool,
         image_format: str | None, path: str) -> None:
    """Show the facts of the image at PATH."""
    try:
        images = (read_chain(path, format=image_format, tools=settings.tools) if backing_chain
                  else [read_image(path, format=image_format, tools=settings.tools)])
    except InvalidInputError as error:
        if as_json:
            fail_json(ctx, error)
        raise
    if as_json:
        documents = [image_json(image, settings.tools) for image in images]
        echo_json(documents if backing_chain else documents[0])
        return
    click.echo("\n\n".join(image_text(image, settings.tools) for image in images))


def shows_children(tools: Tools) -> bool:
    return qemu_version(tools.qemu_img)[:2] >= PROTOCOL_CHILD_SINCE


def image_json(image: ImageInfo, tools: Tools) -> dict[str, Any]:
    """The image as the local `qemu-img info --output=json` shows it; our extras under ``qdisk``."""
    document: dict[str, Any] = {}
    children = shows_children(tools)
    if children and image.protocol is not None:
        document["children"] = [{"name": "file", "info": _protocol_json(image)}]
    elif children and image.format in PROTOCOLS:  # the file opened as the format (-f file)
        document["children"] = []
    document |= {"filename": image.filename, "format": image.format,
                 "virtual-size": image.virtual_size}
    if image.actual_size is not None:
        document["actual-size"] = image.actual_size
    if image.cluster_size is not None:
        document["cluster-size"] = image.cluster_size
    if image.backing_filename is not None:
        document["backing-filename"] = image.backing_filename
        document["full-backing-filename"] = image.backing_path
    if image.backing_format is not None:
        document["backing-filename-format"] = image.backing_format
    document["dirty-flag"] = image.dirty
    if image.is_qcow2:
        document["format-specific"] = {"type": "qcow2", "data": _qcow2_data(image)}
    elif children and image.format in PROTOCOLS:
        document["format-specific"] = {"type": "file", "data": _protocol_data(image)}
    document["qdisk"] = _extras(image)
    return document


def _protocol_json(image: ImageInfo) -> dict[str, Any]:
    document: dict[str, Any] = {"children": [], "filename": image.filename, "format": image.protocol,
                                "virtual-size": image.file_length}
    if image.actual_size is not None:
        document["actual-size"] = image.actual_size
    document["format-specific"] = {"type": "file", "data": _protocol_data(image)}
    document["dirty-flag"] = False
    return document


def _protocol_data(image: ImageInfo) -> dict[str, Any]:
    return {} if image.extent_size_hint is None else {"extent-size-hint": image.extent_size_hint}


def _qcow2_data(image: ImageInfo) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if image.compat is not None:
        data["compat"] = image.compat
    if image.compression_type is not None:
        data["compression-type"] = image.compression_type
    version_3 = image.header is None or image.header.version >= 3
    if version_3:
        data["lazy-refcounts"] = image.lazy_refcounts
    data["refcount-bits"] = image.refcount_bits
    if image.data_file is not None:
        data["data-file"] = image.data_file
    if image.uses_data_file:
        data["data-file-raw"] = image.data_file_raw
    if version_3:
        data["corrupt"] = image.corrupt
        data["extended-l2"] = image.extended_l2
    return data


def _extras(image: ImageInfo) -> dict[str, Any]:
    extras: dict[str, Any] = {"source": "qemu-img info" if image.from_qemu_img else "header"}
    header = image.header
    if header is None:
        return extras
    extras.update({
        "version": header.version,
        "header-length": header.header_length,
        "cluster-bits": header.cluster_bits,
        "crypt-method": header.crypt_method,
        "l1-size": header.l1_size,
        "l1-table-offset": header.l1_table_offset,
        "allocated-l2-tables": image.allocated_l2_tables,
        "refcount-table-offset": header.refcount_table_offset,
        "refcount-table-clusters": header.refcount_table_clusters,
        "refcount-order": header.refcount_order,
        "nb-snapshots": header.nb_snapshots,
        "snapshots-offset": header.snapshots_offset,
        "incompatible-features": header.incompatible_features,
        "compatible-features": header.compatible_features,
        "autoclear-features": header.autoclear_features,
        "header-extensions": [{"type": f"{extension.type:#010x}", "name": extension.name,
                               "length": extension.length}
                              for extension in image.header_extensions],
    })
    return extras


def image_text(image: ImageInfo, tools: Tools) -> str:
    """The image in qemu-img's human layout, plus the header facts only we read."""
    lines = [f"image: {image.filename}",
             f"file format: {image.format}",
             f"virtual size: {qemu_size(image.virtual_size)} ({image.virtual_size} bytes)"]
    if image.actual_size is not None:
        lines.append(f"disk size: {qemu_size(image.actual_size)}")
    if image.cluster_size is not None:
        lines.append(f"cluster_size: {image.cluster_size}")
    if image.backing_filename is not None:
        # As qemu-img: the resolved path only when it differs from the name.
        actual = ("" if image.backing_path == image.backing_filename
                  else f" (actual path: {image.backing_path})")
        lines.append(f"backing file: {image.backing_filename}{actual}")
    if image.backing_format is not None:
        lines.append(f"backing file format: {image.backing_format}")
    if image.is_qcow2:
        lines.append("Format specific information:")
        lines += [f"    {key.replace('-', ' ')}: {_text_value(value)}"
                  for key, value in _qcow2_data(image).items()]
    if shows_children(tools) and image.protocol is not None:
        assert image.file_length is not None
        lines += ["Child node '/file':", f"    filename: {image.filename}",
                  f"    protocol type: {image.protocol}",
                  f"    file length: {qemu_size(image.file_length)} ({image.file_length} bytes)"]
        if image.actual_size is not None:
            lines.append(f"    disk size: {qemu_size(image.actual_size)}")
        if data := _protocol_data(image):
            lines.append("    Format specific information:")
            lines += [f"        {key.replace('-', ' ')}: {value}" for key, value in data.items()]
    if image.dirty:
        lines.append("dirty: yes (not closed cleanly)")
    if image.allocated_l2_tables is not None and image.header is not None:
        lines.append(f"allocated L2 tables: {image.allocated_l2_tables} of "
                     f"{image.header.l1_size} L1 entries")
    return "\n".join(lines)


def qemu_size(size: int) -> str:
    """A byte count as qemu-img prints it (QEMU's size_to_str: 3 significant digits, the unit
    switching at 1000 of the one below: ``384 KiB`` for 393728 bytes, ``0.977 KiB`` for 1000)."""
    exponent = math.frexp(size / (1000 / 1024))[1]
    power = max(0, (exponent - 1) // 10)
    return f"{size / 1024**power:0.3g} {('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[power]}B"


def _text_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)

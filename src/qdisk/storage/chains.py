"""pve-storage's volume chains (``snapshot-as-volume-chain``): the file of each snapshot
layer of a volume, and which snapshot a layer's file is."""

from __future__ import annotations

import os
import re

from qdisk.storage.schema import Layout
from qdisk.storage.volumes import Volume

# pve-storage's snapshot names (pve-configid): a letter, then letters, digits, - and _.
SNAPSHOT_NAME_PATTERN = r"[a-zA-Z][a-zA-Z0-9_\-]+"


def snapshot_file_name(volume: Volume, snapshot: str) -> str:
    """The file (or LV) name of ``volume``'s layer for ``snapshot`` (pve-storage's
    get_snap_name): ``snap-<snap>-<file>`` beside a file, ``snap_<lv>_<snap>.qcow2`` on LVM."""
    name = os.path.basename(volume.path)
    if volume.storage is not None and volume.storage.kind.layout is Layout.LVM:
        return f"snap_{name.removesuffix('.qcow2')}_{snapshot}.qcow2"
    return f"snap-{snapshot}-{name}"


def layer_snapshot(volume: Volume, path: str) -> str | None:
    """The snapshot whose layer of ``volume`` the image at ``path`` is, or None (the
    volume itself, or an image that is no snapshot of it: a linked clone's base)."""
    name = os.path.basename(path)
    if os.path.dirname(os.path.normpath(path)) != os.path.dirname(os.path.normpath(volume.path)):
        return None
    prefix, _, suffix = snapshot_file_name(volume, "/").partition("/")
    match = re.fullmatch(f"{re.escape(prefix)}({SNAPSHOT_NAME_PATTERN}){re.escape(suffix)}", name)
    return match.group(1) if match else None

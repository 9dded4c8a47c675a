"""Helpers of the cache tests: real images and opening them in real QEMU with options."""

from __future__ import annotations

import subprocess
from pathlib import Path

# name -> qemu-img create arguments (options, size)
CACHE_IMAGES = {
    "c64k-2g": ("-o", "cluster_size=65536", "2G"),
    "c64k-1t": ("-o", "cluster_size=65536", "1T"),
    "c512-v2": ("-o", "cluster_size=512,compat=0.10", "64M"),
    "c2m-extl2": ("-o", "cluster_size=2M,extended_l2=on,refcount_bits=64", "3T"),
}


def create_images(directory: Path) -> dict[str, Path]:
    paths = {}
    for name, (*options, size) in CACHE_IMAGES.items():
        paths[name] = directory / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(paths[name]),
                        size], check=True)
    return paths


def qemu_open_error(path: Path, options: dict[str, str]) -> str | None:
    """QEMU's error opening ``path`` with the qcow2 options (None: it opens)."""
    settings = "".join(f",{name}={value}" for name, value in options.items())
    result = subprocess.run(["qemu-io", "-r", "--image-opts", "-c", "quit",
                             f"driver=qcow2,file.filename={path}{settings}"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return None
    first_line = result.stderr.splitlines()[0]
    return first_line.split("can't open: ", 1)[1]

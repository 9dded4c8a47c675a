"""Reading the facts of 1,000 qcow2 images: natively (qdisk.image) vs `qemu-img info`.

Run with `make bench`. The native reader must be at least 100 times faster.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qdisk.image import read_image

IMAGE_COUNT = 1000
# A few layouts, so the reader sees different cluster sizes and L1 tables.
LAYOUTS = (("cluster_size=65536", "100G"), ("cluster_size=2M,extended_l2=on", "1T"),
           ("cluster_size=4096,refcount_bits=1", "10G"), ("compat=0.10", "1G"))
REQUIRED_RATIO = 100
NATIVE_PASSES = 5


def make_images(directory: Path) -> list[Path]:
    """One image per layout made by qemu-img, copied to 1,000 files (creating is not measured)."""
    templates = []
    for number, (options, size) in enumerate(LAYOUTS):
        template = directory / f"template-{number}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", options, str(template),
                        size], check=True)
        templates.append(template.read_bytes())
    paths = []
    for number in range(IMAGE_COUNT):
        path = directory / f"image-{number:04}.qcow2"
        path.write_bytes(templates[number % len(templates)])
        paths.append(path)
    return paths


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="qdisk-bench-") as directory:
        paths = make_images(Path(directory))
        # The best of a few passes: a pass takes milliseconds, so a scheduler hiccup on a
        # shared machine would otherwise decide the ratio.
        native_seconds = math.inf
        for _ in range(NATIVE_PASSES):
            start = time.perf_counter()
            native = [read_image(path).virtual_size for path in paths]
            native_seconds = min(native_seconds, time.perf_counter() - start)
        start = time.perf_counter()
        via_qemu_img = [json.loads(subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(path)],
            capture_output=True, text=True, check=True).stdout)["virtual-size"] for path in paths]
        qemu_img_seconds = time.perf_counter() - start
    assert native == via_qemu_img, "the native reader and qemu-img disagree"
    ratio = qemu_img_seconds / native_seconds
    print(f"native reader:  {IMAGE_COUNT} images in {native_seconds:.3f} s "
          f"({native_seconds / IMAGE_COUNT * 1e6:.0f} us per image)")
    print(f"qemu-img info:  {IMAGE_COUNT} images in {qemu_img_seconds:.3f} s "
          f"({qemu_img_seconds / IMAGE_COUNT * 1e3:.1f} ms per image)")
    print(f"ratio: native is {ratio:.0f} times faster (required: {REQUIRED_RATIO})")
    return 0 if ratio >= REQUIRED_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

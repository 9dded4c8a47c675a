"""Reading the facts of 1,000 qcow2 images: natively (qdisk.image.info) vs `qemu-img info`.

Run with `make bench`. The native reader must be at least 100 times faster; the ratio is
taken on the native reader's median pass, not its best, so that it holds on a busy machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qdisk.cli.image import image_json
from qdisk.image.info import read_image
from qdisk.settings import Tools

# The QEMU tools on PATH.
TOOLS = Tools()

IMAGE_COUNT = 1000
# A few layouts, so the reader sees different cluster sizes, L1 tables, versions and
# header extensions (a backing name and format).
LAYOUTS = (("cluster_size=65536", "100G"), ("cluster_size=2M,extended_l2=on", "1T"),
           ("cluster_size=4096,refcount_bits=1", "10G"), ("compat=0.10", "1G"),
           ("backing_file=template-0.qcow2,backing_fmt=qcow2", "100G"))
REQUIRED_RATIO = 100
NATIVE_PASSES = 5


def make_images(directory: Path) -> list[Path]:
    """One image per layout made by qemu-img, copied to 1,000 files (creating is not measured)."""
    templates = []
    for number, (options, size) in enumerate(LAYOUTS):
        template = directory / f"template-{number}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", options, str(template),
                        size], check=True, cwd=directory)
        templates.append(template.read_bytes())
    paths = []
    for number in range(IMAGE_COUNT):
        path = directory / f"image-{number:04}.qcow2"
        path.write_bytes(templates[number % len(templates)])
        paths.append(path)
    return paths


def facts(document: dict[str, object]) -> dict[str, object]:
    """What both readers report (qemu-img info's keys), to check they agree."""
    return {key: document.get(key) for key in ("format", "virtual-size", "cluster-size",
                                               "backing-filename", "backing-filename-format",
                                               "dirty-flag", "format-specific")}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="qdisk-bench-") as directory:
        paths = make_images(Path(directory))
        native_passes = []
        for _ in range(NATIVE_PASSES):
            start = time.perf_counter()
            native = [read_image(path, tools=TOOLS) for path in paths]
            native_passes.append(time.perf_counter() - start)
        start = time.perf_counter()
        via_qemu_img = [json.loads(subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(path)],
            capture_output=True, text=True, check=True).stdout) for path in paths]
        qemu_img_seconds = time.perf_counter() - start
        # Converting to qemu-img's JSON is not part of reading: compared after the clock.
        assert [facts(image_json(image)) for image in native] == \
            [facts(document) for document in via_qemu_img], "the readers disagree"
    best, median = min(native_passes), statistics.median(native_passes)
    ratio = qemu_img_seconds / median
    print(f"native reader:  {IMAGE_COUNT} images in {median:.3f} s median of {NATIVE_PASSES} "
          f"passes, {best:.3f} s best ({median / IMAGE_COUNT * 1e6:.0f} us per image)")
    print(f"qemu-img info:  {IMAGE_COUNT} images in {qemu_img_seconds:.3f} s "
          f"({qemu_img_seconds / IMAGE_COUNT * 1e3:.1f} ms per image)")
    print(f"ratio: native is {ratio:.0f} times faster on its median pass, "
          f"{qemu_img_seconds / best:.0f} on its best (required: {REQUIRED_RATIO})")
    return 0 if ratio >= REQUIRED_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

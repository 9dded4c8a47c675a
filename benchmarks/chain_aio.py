"""How much of chain-auto/chain-top-only comes from the aio mode, and how much from the cache.

In ``chain-top-only`` QEMU opens the backing image by itself (as for qemu-server's linked
clones), with its default ``aio=threads``; qdisk's explicit backing nodes carry the drive's
``aio``. This measures a third variant between the two: chain-auto's graph with the
backing node left at QEMU's default cache. Interleaved rounds, medians.

    .venv/bin/python benchmarks/chain_aio.py [--size-gib 1024] [--runtime 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
from pathlib import Path

from qdisk.bench import variants
from qdisk.bench.daemon import EXPORT_NAME, StorageDaemon
from qdisk.bench.fio import run_fio
from qdisk.qemu.blockdev import BlockdevArguments
from qdisk.settings import Settings

MIB = 2**20


def cases(settings: Settings, overlay: Path) -> dict[str, BlockdevArguments]:
    top_mib = math.ceil(variants.auto_cache_size(overlay, settings) / MIB)
    top_only = variants.blockdev_arguments(
        variants.drive_string(overlay, "qcow2", "native", f"qcow2-cache-size={top_mib}"), settings)
    chain_auto = variants.blockdev_arguments(
        variants.drive_string(overlay, "qcow2", "native", "qcow2-cache-size-based-on-disk=1"), settings)
    explicit_default = copy.deepcopy(chain_auto)
    top = explicit_default.blockdevs[0]["file"]
    del top["backing"]["cache-size"]
    top["cache-size"] = top_mib * MIB
    return {"top-only, implicit backing (aio=threads, default cache)": top_only,
            "top-only, explicit backing (aio=native, default cache)": explicit_default,
            "chain-auto": chain_auto}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=1024)
    parser.add_argument("--runtime", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="qdisk-chain-aio-") as workdir:
        directory = Path(workdir)
        images = variants.make_scratch_images(directory, args.size_gib << 30, settings)
        assert images.overlay is not None
        measured: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, arguments in cases(settings, images.overlay).items():
                with StorageDaemon(settings.tools.qemu_storage_daemon, arguments.objects,
                                   arguments.blockdevs, arguments.top_node_name, directory) as daemon:
                    result = run_fio(settings.tools.fio, daemon.socket, EXPORT_NAME, args.runtime,
                                     directory / "fio.json")
                measured.setdefault(name, []).append(result.iops)
    for name, iops in measured.items():
        print(f"{name}: median {statistics.median(iops):,.0f} IOPS ({', '.join(f'{x:,.0f}' for x in iops)})")


if __name__ == "__main__":
    main()

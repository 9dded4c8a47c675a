"""`qdisk pve audit` of a host with 1,000 VMs of 4 disks each, against `qemu-img info`.

Run with `.venv/bin/python benchmarks/pve_audit.py [--big]`. A simulated host tree (storage.cfg,
1,000 VM configs on one node) gets 4,000 thin qcow2 images: one per layout made by
qemu-img, copied (making them is not measured). The whole command (`qdisk pve audit
--json`, a new process, Python's start included) must take well under 2 s; `qemu-img
info` is run on a sample of the disks and its time scaled to all of them, the rate an
audit that ran it once per disk would have. The CPU time is printed beside the wall
time: on a machine shared with other work it is the steadier figure.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VM_COUNT = 1000
DISKS_PER_VM = 4
# Thin images of the sizes and layouts a host has: a system disk, data disks, a volume
# chain's overlay (128 KiB clusters, extended L2). The reader reads the part of the L1
# table that maps the disk (to count the allocated L2 tables): 8 bytes per 512 MiB with
# 64 KiB clusters, so a 32 TiB image costs it 512 KiB and about 0.3 ms more
# (BIG_DISK_LAYOUTS, with --big).
LAYOUTS = (("cluster_size=65536", "32G"), ("cluster_size=65536", "256G"),
           ("cluster_size=65536", "1T"), ("cluster_size=131072,extended_l2=on", "2T"))
BIG_DISK_LAYOUTS = (*LAYOUTS[:2], ("cluster_size=65536", "32T"), LAYOUTS[3])
COMMAND_PASSES = 5
QEMU_IMG_SAMPLE = 200
LIMIT_SECONDS = 2.0
QDISK = str(Path(sys.executable).parent / "qdisk")


def make_host(root: Path, layouts: tuple[tuple[str, str], ...] = LAYOUTS) -> None:
    """storage.cfg with a `dir` storage, and VMs 100.. on node pve1, each with 4 disks."""
    pve = root / "etc" / "pve"
    configs = pve / "nodes" / "pve1" / "qemu-server"
    configs.mkdir(parents=True)
    images = root / "var" / "lib" / "vz" / "images"
    (pve / "storage.cfg").write_text(f"dir: local\n\tpath {root}/var/lib/vz\n\tcontent images\n")
    templates = []
    for number, (options, size) in enumerate(layouts):
        template = root / f"template-{number}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", options, str(template),
                        size], check=True)
        templates.append((template.read_bytes(), size))
    for vmid in range(100, 100 + VM_COUNT):
        directory = images / str(vmid)
        directory.mkdir(parents=True)
        lines = [f"name: vm{vmid}", "memory: 4096", "scsihw: virtio-scsi-single"]
        for disk in range(DISKS_PER_VM):
            data, size = templates[disk]
            (directory / f"vm-{vmid}-disk-{disk}.qcow2").write_bytes(data)
            lines.append(f"scsi{disk}: local:{vmid}/vm-{vmid}-disk-{disk}.qcow2,iothread=1,"
                         f"size={size}")
        (configs / f"{vmid}.conf").write_text("\n".join(lines) + "\n")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def audit_seconds(root: Path) -> tuple[float, float, dict[str, object]]:
    """Wall and CPU seconds of one `qdisk pve audit --json`, and its report."""
    env = {**os.environ, "QDISK_PVE_ROOT": str(root), "QDISK_PVE_NODE": "pve1"}
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = subprocess.run([QDISK, "pve", "audit", "--json"], capture_output=True, text=True,
                            env=env, check=True)
    return time.perf_counter() - start, cpu_seconds() - cpu_start, json.loads(result.stdout)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="qdisk-bench-pve-") as directory:
        root = Path(directory)
        make_host(root, BIG_DISK_LAYOUTS if "--big" in sys.argv[1:] else LAYOUTS)
        passes, cpu = [], []
        for _ in range(COMMAND_PASSES):
            seconds, cpu_used, report = audit_seconds(root)
            passes.append(seconds)
            cpu.append(cpu_used)
        [node] = report["nodes"]  # type: ignore[index]
        disks = [disk for vm in node["vms"] for disk in vm["disks"]]
        assert len(disks) == VM_COUNT * DISKS_PER_VM and all(disk["readable"] for disk in disks)
        sample = sorted((root / "var/lib/vz/images").glob("*/*.qcow2"))[:QEMU_IMG_SAMPLE]
        start = time.perf_counter()
        for path in sample:
            subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                           capture_output=True, check=True)
        per_disk = (time.perf_counter() - start) / len(sample)
    median = statistics.median(passes)
    qemu_img_seconds = per_disk * len(disks)
    print(f"qdisk pve audit --json: {VM_COUNT} VMs, {len(disks)} disks in {median:.3f} s median "
          f"of {COMMAND_PASSES} runs, {min(passes):.3f} s best, {statistics.median(cpu):.3f} s of "
          f"CPU (the whole command, Python's start included)")
    print(f"qemu-img info: {per_disk * 1e3:.1f} ms per disk ({QEMU_IMG_SAMPLE} measured), "
          f"{qemu_img_seconds:.1f} s for {len(disks)} disks")
    print(f"ratio: the audit takes 1/{qemu_img_seconds / median:.0f} of one qemu-img info per disk "
          f"(required: under {LIMIT_SECONDS:g} s)")
    return 0 if median < LIMIT_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())

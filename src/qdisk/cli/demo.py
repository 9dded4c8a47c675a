"""`qdisk demo`: the whole flow on an embedded default, narrated.

A thin 1 TiB qcow2 disk with the automatic cache: the drive language, the cache
plan from the image header, the QEMU command, a real VM started under QEMU, its
cache changed while it runs, a short benchmark, and the VM stopped and removed.
Every step runs a real ``qdisk`` command, shown before its output, so the demo
doubles as a tour of the CLI. ``make demo`` runs it with ``QDISK_HOME`` under the
project's ``scratch/`` directory.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from qdisk import storage
from qdisk.cli.common import EXIT_OK, run
from qdisk.config.drive import make_drive, parse_drive, print_drive
from qdisk.settings import Settings
from qdisk.vm import store, views

DEMO_VMID = "9100"
DEMO_NAME = "qdisk-demo"
# What a Proxmox user would paste: a 1 TiB thin qcow2 disk on the default storage.
DISK = "local:1024,format=qcow2,cache=none,discard=on,iothread=1,ssd=1"
AUTO_DISK_OPTIONS = "qcow2-cache-size-based-on-disk=1"


def _step(title: str, why: str) -> None:
    click.secho(f"\n== {title}", bold=True)
    click.echo(f"   {why}")


def _run(argv: Sequence[str], *, may_fail: bool = False) -> int:
    """Run one qdisk command in this process (the command line this one runs under),
    echoing it first."""
    click.secho("$ qdisk " + " ".join(argv), fg="cyan")
    code = run(click.get_current_context().find_root().command, list(argv))
    if code != EXIT_OK and not may_fail:
        raise click.ClickException(f"the demo stopped: 'qdisk {' '.join(argv)}' exited with {code}")
    return code


def _disk_line(settings: Settings) -> str:
    return store.load(settings, int(DEMO_VMID)).current.values["scsi0"]


def _with_explicit_l2_cache(line: str, l2_cache_mib: int) -> str:
    """The same drive with an explicit L2 cache instead of the automatic size."""
    values = dict(parse_drive("scsi0", line).drive.values)
    values.pop("qcow2-cache-size-based-on-disk", None)
    values["qcow2-l2-cache-size"] = l2_cache_mib
    return print_drive(make_drive("scsi0", values).drive)


@click.command(name="demo")
@click.option("--bench-size", default="1T", show_default=True, help="Size of the benchmark's scratch images.")
@click.option("--bench-runtime", default=5, show_default=True, help="Seconds per benchmark variant.")
@click.pass_obj
def command(settings: Settings, bench_size: str, bench_runtime: int) -> None:
    """The whole flow on a demo VM (id 9100): configure, plan, start, tune live, measure, stop."""
    click.echo(f"qdisk demo in QDISK_HOME={settings.home}")
    _step("1. The drive language",
          "A drive line as in a Proxmox VE config, with the qcow2 cache options; "
          "it prints back canonically, and every mistake is reported at once.")
    _run(["drive", "parse", f"{DISK.replace('local:1024', 'local:100/vm-100-disk-0.qcow2')},"
          "qcow2-l2-cache-size=128,qcow2-cache-clean-interval=900"])
    _run(["drive", "parse", "local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=128,"
          "qcow2-cache-size-based-on-disk=1,qcow2-l2-cache-entry-size=1000"], may_fail=True)

    if store.config_path(settings, int(DEMO_VMID)).exists():
        click.echo("\n(a demo VM from an earlier, interrupted run exists: removing it first)")
        _run(["vm", "stop", DEMO_VMID], may_fail=True)
        _run(["vm", "destroy", DEMO_VMID])
    _step("2. A VM with a thin 1 TiB qcow2 disk and the automatic cache",
          "The allocation syntax local:1024 creates the image with qemu-img.")
    _run(["vm", "create", DEMO_VMID, "--name", DEMO_NAME, "--memory", "128",
          "--scsihw", "virtio-scsi-single", "--scsi0", f"{DISK},{AUTO_DISK_OPTIONS}"])
    try:
        line = _disk_line(settings)
        _run(["vm", "config", DEMO_VMID])
        _step("3. The cache plan, from the image header",
              "QEMU's default covers 256 GiB of this disk; the automatic size covers all of it.")
        path = storage.resolve(storage.load(settings), parse_drive("scsi0", line).drive.file).path
        _run(["cache", "plan", path])
        _step("4. The QEMU command", "The cache options sit on the qcow2 format node, in bytes.")
        _run(["vm", "showcmd", DEMO_VMID, "--pretty"])
        _step("5. Start the VM under QEMU", "No guest OS is needed to show the block layer.")
        _run(["vm", "start", DEMO_VMID])
        _run(["vm", "status", DEMO_VMID])
        _step("6. Change the cache while it runs",
              "blockdev-reopen applies a 64 MiB L2 cache (half the disk) without a restart.")
        _run(["vm", "set", DEMO_VMID, "--scsi0", _with_explicit_l2_cache(line, 64)])
        _run(["vm", "status", DEMO_VMID])
        _run(["vm", "pending", DEMO_VMID])
        _step("7. Stop the VM", "The benchmark that follows needs the machine's CPUs to itself.")
        _run(["vm", "stop", DEMO_VMID])
        _step("8. Measure the gain on this machine",
              "qemu-storage-daemon serves each variant from qdisk's own -blockdev; fio reads 4 KiB at random.")
        _run(["bench", "--size", bench_size, "--runtime", str(bench_runtime), "--rounds", "1"])
    finally:
        _step("9. Remove the demo VM", "Its config and image go; nothing is left running or on disk.")
        if views.status(settings, int(DEMO_VMID)).running:  # the demo stopped half-way
            _run(["vm", "stop", DEMO_VMID], may_fail=True)
        _run(["vm", "destroy", DEMO_VMID], may_fail=True)
    click.echo("\nDone. `make test` runs the whole suite; README.md shows measured results.\n"
               "To tune the demo VM's disk in the browser's disk editor, recreate it and serve the page:\n"
               f"  export QDISK_HOME={settings.home}\n"
               f"  .venv/bin/qdisk vm create {DEMO_VMID} --name {DEMO_NAME} --memory 128 "
               f"--scsihw virtio-scsi-single --scsi0 {DISK},{AUTO_DISK_OPTIONS}\n"
               "  .venv/bin/qdisk token create web    # prints the token the page's login takes\n"
               "  .venv/bin/qdisk serve               # open http://127.0.0.1:8006/, log in, "
               f"VM {DEMO_VMID}, Edit scsi0")

"""`qdisk vm`: VMs in the Proxmox VE config format."""

from __future__ import annotations

import click

from qdisk.cli.common import pass_settings, warn
from qdisk.qemu.command import vm_command
from qdisk.settings import Settings


@click.group(name="vm")
def command() -> None:
    """VMs: their configs and QEMU commands."""


@command.command(name="showcmd")
@click.argument("vmid", type=int)
@click.option("--pretty", is_flag=True, help="One option per line, as `qm showcmd --pretty`.")
@click.option("--qemu-version", metavar="X.Y[.Z]",
              help="Build for this QEMU version (default: the installed qemu-system's).")
@click.option("--syntax", type=click.Choice(["blockdev", "drive"]),
              help="Force -blockdev or legacy -drive (default: by machine version, >= 10.0 "
                   "is blockdev).")
@pass_settings
def showcmd(settings: Settings, vmid: int, pretty: bool, qemu_version: str | None,
            syntax: str | None) -> None:
    """Print the QEMU command that starts VM VMID."""
    result = vm_command(settings, vmid, qemu_version_text=qemu_version,
                        syntax="blockdev" if syntax == "blockdev" else
                        "drive" if syntax == "drive" else None)
    for message in result.warnings:
        warn(message)
    click.echo(result.text(pretty=pretty))

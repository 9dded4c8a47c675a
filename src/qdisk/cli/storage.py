"""`qdisk storage`: the storages of storage.cfg."""

from __future__ import annotations

import click

from qdisk import storage
from qdisk.cli.common import pass_settings
from qdisk.settings import Settings


@click.group(name="storage")
@pass_settings
def command(settings: Settings) -> None:
    """Storages (storage.cfg; a fresh QDISK_HOME gets a `dir` storage `local`)."""
    storage.ensure_default(settings)


@command.command(name="path")
@click.argument("volid")
@pass_settings
def path(settings: Settings, volid: str) -> None:
    """Print the absolute path of VOLID (local:100/vm-100-disk-0.qcow2, local:iso/x.iso)."""
    click.echo(storage.resolve(storage.load(settings), volid).path)

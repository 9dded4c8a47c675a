"""`qdisk storage`: the storages of storage.cfg."""

from __future__ import annotations

from pathlib import Path

import click

from qdisk import storage
from qdisk.cli.common import echo_json, pass_settings, warn_all, with_default_storage
from qdisk.settings import Settings


@click.group(name="storage")
@pass_settings
def command(settings: Settings) -> None:
    """Storages (storage.cfg; a fresh QDISK_HOME gets a `dir` storage `local`)."""
    with_default_storage(settings)


@command.command(name="path")
@click.argument("volid")
@pass_settings
def path(settings: Settings, volid: str) -> None:
    """Print the path of VOLID: a file, a device, or QEMU's protocol string for network
    volumes (local:100/vm-100-disk-0.qcow2, local-lvm:vm-100-disk-0, ceph:vm-100-disk-0)."""
    click.echo(storage.resolve(storage.load(settings), volid).path)


@command.command(name="config")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_settings
def config(settings: Settings, file: Path | None) -> None:
    """Check storage.cfg (QDISK_HOME's, or FILE, e.g. a copy of a host's
    /etc/pve/storage.cfg) and print it as Proxmox VE writes it."""
    if file is None:
        parsed = storage.load(settings)
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise storage.StorageError(f"{file}: cannot read: {getattr(error, 'strerror', error)}") from None
        parsed = storage.parse_storage_cfg(text, source=str(file), config_dir=settings.home)
        warn_all(parsed.warnings)
    click.echo(storage.print_storage_cfg(parsed), nl=False)


@command.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@pass_settings
def list_(settings: Settings, as_json: bool) -> None:
    """List the storages with what Proxmox VE derives for them: content types (the
    type's default when none is set), image formats (default first), shared, enabled."""
    storages = list(storage.load(settings).storages.values())
    if as_json:
        echo_json([{"id": item.id, "type": item.type, "content": list(item.content),
                    "formats": _formats(item), "shared": item.shared, "enabled": not item.disabled}
                   for item in storages])
        return
    click.echo(f"{'ID':<20} {'TYPE':<12} {'SHARED':<7} {'ENABLED':<8} {'FORMATS':<22} CONTENT")
    for item in storages:
        click.echo(f"{item.id:<20} {item.type:<12} {_yes(item.shared):<7} {_yes(not item.disabled):<8} "
                   f"{','.join(_formats(item)) or '-':<22} {','.join(item.content)}")


def _formats(item: storage.Storage) -> list[str]:
    return sorted(item.formats, key=lambda fmt: fmt != item.default_format)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"

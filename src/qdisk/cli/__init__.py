"""The ``qdisk`` command line.

:func:`qdisk.cli.common.run` is the one place that decides exit codes: 0 ok, 2 invalid
input or refused (:class:`~qdisk.errors.InvalidInputError`, click usage errors), 1 every
other failure. A user never sees a traceback (``QDISK_DEBUG=1`` shows one).
"""

from __future__ import annotations

import logging
import sys

import click

from qdisk import __version__
from qdisk.cli import bench, cache, demo, drive, image, pve, serve, storage, token, vm
from qdisk.cli.common import run
from qdisk.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qdisk")
@click.option("-v", "--verbose", count=True, help="Log what qdisk does (-vv: debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Configure QEMU disks in the Proxmox VE drive syntax and tune their qcow2 cache."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                            format="%(name)s: %(message)s")
    ctx.obj = Settings.from_env()


for _module in (drive, image, cache, storage, vm, pve, bench, serve, token, demo):
    cli.add_command(_module.command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it)."""
    return run(cli, argv)


if __name__ == "__main__":
    sys.exit(main())

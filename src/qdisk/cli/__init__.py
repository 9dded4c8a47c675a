"""The ``qdisk`` command line.

``main`` is the one place that decides exit codes: 0 ok, 2 invalid input or
refused (:class:`~qdisk.errors.InvalidInputError`, click usage errors), 1 every
other failure. A user never sees a traceback (``QDISK_DEBUG=1`` shows one).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from qdisk import __version__
from qdisk.cli import bench, cache, demo, drive, image, pve, serve, storage, token, vm
from qdisk.cli.common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from qdisk.errors import InvalidInputError, QdiskError
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
    try:
        # standalone_mode=False: click returns ctx.exit()'s code instead of exiting.
        result = cli.main(args=argv, prog_name="qdisk", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        return EXIT_INVALID if isinstance(error, click.UsageError) else error.exit_code
    except click.Abort as abort:
        # click turns Ctrl-C into Abort; the library has cleaned up on the way out.
        if isinstance(abort.__context__, KeyboardInterrupt):
            click.echo("qdisk: interrupted", err=True)
            return EXIT_INTERRUPTED
        click.echo("qdisk: aborted", err=True)
        return EXIT_FAILURE
    except InvalidInputError as error:
        click.echo(f"qdisk: {error}", err=True)
        return EXIT_INVALID
    except QdiskError as error:
        click.echo(f"qdisk: {error}", err=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        click.echo("qdisk: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001  (the last line of defence: no traceback)
        if os.environ.get("QDISK_DEBUG"):
            raise
        click.echo(f"qdisk: internal error: {type(error).__name__}: {error}", err=True)
        return EXIT_FAILURE
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

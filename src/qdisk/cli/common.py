"""What the subcommands share: running a command line (exit codes), settings, the home's
default storage, this Proxmox VE host, ``--KEY VALUE`` options and ``--delete`` lists,
warnings and JSON output. Subcommand modules import this module, never each other."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, NoReturn

import click

from qdisk import storage
from qdisk.config.propstring import split_list
from qdisk.errors import InvalidInputError, QdiskError
from qdisk.pve.host import PveHost
from qdisk.settings import Settings

# The exit codes. run() maps exceptions to them; a command calls ctx.exit() with
# one only after printing the error itself (--json errors, drive parse's problem lines).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

pass_settings = click.make_pass_decorator(Settings, ensure=True)
# Commands that take arbitrary `--KEY VALUE` options, as qm does.
KEY_VALUE_COMMAND = {"ignore_unknown_options": True, "allow_extra_args": True}


def run(group: click.Command, argv: list[str] | None) -> int:
    """Run a command line of ``group`` and return its exit code: every error becomes one
    message on stderr and its code, never a traceback."""
    try:
        # standalone_mode=False: click returns ctx.exit()'s code instead of exiting.
        result = group.main(args=argv, prog_name="qdisk", standalone_mode=False)
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


def with_default_storage(settings: Settings) -> None:
    """A fresh QDISK_HOME works at once: the first command creates the `local` storage.
    What reading storage.cfg skipped is told here, once per command."""
    warn_all(storage.ensure_default(settings).warnings)


def pve_host(settings: Settings) -> PveHost:
    """This host ($QDISK_PVE_ROOT, $QDISK_PVE_NODE) with the settings' QEMU tools."""
    host = PveHost.from_env()
    return PveHost(host.paths, settings.tools)


def parse_key_values(args: list[str]) -> dict[str, str]:
    """``--key value`` and ``--key=value`` pairs, in order; a key given twice is an error."""
    values: dict[str, str] = {}
    position = 0
    while position < len(args):
        argument = args[position]
        if not argument.startswith("--") or len(argument) == 2:
            raise click.UsageError(f"unexpected argument '{argument}' (expected --KEY VALUE)")
        key, has_value, value = argument[2:].partition("=")
        if not has_value:
            if position + 1 >= len(args):
                raise click.UsageError(f"option '--{key}' needs a value")
            position += 1
            value = args[position]
        if key in values:
            raise click.UsageError(f"option '--{key}' given twice")
        values[key] = value
        position += 1
    return values


def delete_keys(deletes: tuple[str, ...]) -> list[str]:
    """The keys of ``--delete`` options, each a Proxmox VE list (``a,b c;d``)."""
    return [key for text in deletes for key in split_list(text)]


def warn(message: str) -> None:
    """A warning for the user, on stderr."""
    click.echo(f"warning: {message}", err=True)


def warn_all(messages: Iterable[str]) -> None:
    """Warnings for the user (e.g. what storage.cfg's reading skipped), each once."""
    for message in dict.fromkeys(messages):
        warn(message)


def echo_json(value: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def fail_json(ctx: click.Context, error: InvalidInputError, message: str | None = None) -> NoReturn:
    """``{"errors": [{"message": ...}]}`` on stdout, then exit 2 (the --json form of an error)."""
    echo_json({"errors": [{"message": str(error) if message is None else message}]})
    ctx.exit(EXIT_INVALID)

"""Helpers shared by the subcommands: settings, warnings, JSON output."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NoReturn

import click

from qdisk.errors import InvalidInputError
from qdisk.settings import Settings

# The exit codes. qdisk.cli.main maps exceptions to them; a command calls ctx.exit() with
# one only after printing the error itself (--json errors, drive parse's problem lines).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

pass_settings = click.make_pass_decorator(Settings, ensure=True)


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

"""Helpers shared by the subcommands: settings, warnings, JSON output."""

from __future__ import annotations

import json
from typing import Any

import click

from qdisk.settings import Settings

pass_settings = click.make_pass_decorator(Settings, ensure=True)


def warn(message: str) -> None:
    """A warning for the user, on stderr."""
    click.echo(f"warning: {message}", err=True)


def echo_json(value: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=False))

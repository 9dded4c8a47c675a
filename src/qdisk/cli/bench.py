"""`qdisk bench`."""

from __future__ import annotations

import click


@click.command(name="bench")
def command() -> None:
    """(not yet implemented)"""

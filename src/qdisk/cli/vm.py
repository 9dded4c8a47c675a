"""`qdisk vm`."""

from __future__ import annotations

import click


@click.group(name="vm")
def command() -> None:
    """(not yet implemented)"""

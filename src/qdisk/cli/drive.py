"""`qdisk drive`."""

from __future__ import annotations

import click


@click.group(name="drive")
def command() -> None:
    """(not yet implemented)"""

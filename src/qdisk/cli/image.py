"""`qdisk image`."""

from __future__ import annotations

import click


@click.group(name="image")
def command() -> None:
    """(not yet implemented)"""

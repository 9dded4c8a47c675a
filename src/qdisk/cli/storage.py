"""`qdisk storage`."""

from __future__ import annotations

import click


@click.group(name="storage")
def command() -> None:
    """(not yet implemented)"""

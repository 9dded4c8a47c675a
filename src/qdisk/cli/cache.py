"""`qdisk cache`."""

from __future__ import annotations

import click


@click.group(name="cache")
def command() -> None:
    """(not yet implemented)"""

"""`qdisk token`: API tokens for `qdisk serve` (Proxmox VE's USER@REALM!NAME=SECRET)."""

from __future__ import annotations

import datetime

import click

from qdisk.cli.common import pass_settings
from qdisk.pve.access.usercfg import ROOT_USER
from qdisk.settings import Settings
from qdisk.web import tokens


@click.group(name="token")
def command() -> None:
    """API tokens for the web API and page (`qdisk serve`)."""


@command.command(name="create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="The token can read but change nothing.")
@click.option("--user", default=ROOT_USER, show_default=True, metavar="USER@REALM",
              help="The user the token belongs to.")
@pass_settings
def create(settings: Settings, name: str, read_only: bool, user: str) -> None:
    """Make token NAME and print it once, as USER@REALM!NAME=SECRET (only a hash is kept).

    API clients send it as `Authorization: PVEAPIToken=<the printed line>`; the page's
    login takes the printed line."""
    click.echo(tokens.create(settings, name, user=user, read_only=read_only))


@command.command(name="list")
@pass_settings
def list_(settings: Settings) -> None:
    """List the tokens (never their secrets)."""
    for token in tokens.list_tokens(settings):
        created = datetime.datetime.fromtimestamp(token.created).isoformat(sep=" ", timespec="seconds")
        click.echo(f"{token.token_id}  {'read-only' if token.read_only else 'read-write'}  "
                   f"created {created}")


@command.command(name="remove")
@click.argument("name")
@click.option("--user", default=ROOT_USER, show_default=True, metavar="USER@REALM",
              help="The user the token belongs to.")
@pass_settings
def remove(settings: Settings, name: str, user: str) -> None:
    """Remove token NAME: requests and page sessions with it are refused from now on."""
    tokens.remove(settings, name, user=user)
    click.echo(f"removed {tokens.token_id_of(name, user)}")

"""`qdisk serve`: the JSON API (Proxmox VE's dialect) and the disk editor page."""

from __future__ import annotations

import os
from pathlib import Path

import click

from qdisk.cli.common import pass_settings, warn
from qdisk.cli.vm import ACCEL_ENV
from qdisk.settings import Settings
from qdisk.web import tokens

DEFAULT_LISTEN = "127.0.0.1:8006"


@click.command(name="serve")
@click.option("--listen", "listen_text", default=DEFAULT_LISTEN, show_default=True,
              metavar="HOST:PORT", help="Where to listen (port 0: any free port). An address "
                                        "other than loopback needs TLS or --insecure.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The TLS certificate (PEM); serves HTTPS with --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The TLS certificate's private key (PEM).")
@click.option("--insecure", is_flag=True,
              help="Serve plain HTTP on a non-loopback address (tokens cross the network in clear).")
@pass_settings
def command(settings: Settings, listen_text: str, tls_cert: Path | None, tls_key: Path | None,
            insecure: bool) -> None:
    """Serve the API under /api2/json and the page until interrupted.

    Log in to the page, or call the API, with a token from `qdisk token create`."""
    # FastAPI and uvicorn load only for this command: the others stay quick to start.
    from qdisk.web import server
    from qdisk.web.http import node_name

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = server.TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
    listener = server.listen(server.parse_listen(listen_text), tls, insecure=insecure)
    click.echo(f"qdisk: serving the page and the API (/api2/json) at {listener.url} "
               f"(node {node_name()})")
    if not tokens.list_tokens(settings):
        warn("no API token exists yet: every request is refused until `qdisk token create NAME` "
             "makes one")
    server.serve(settings, listener, accel=os.environ.get(ACCEL_ENV) or None)

"""`qdisk serve`: the JSON API (Proxmox VE's dialect) and the disk editor page."""

from __future__ import annotations

from pathlib import Path

import click

from qdisk.cli.common import pass_settings, pve_host, warn
from qdisk.pve.host import NODE_ENV, PveHost, PveRefusedError
from qdisk.settings import Settings
from qdisk.web import tokens

DEFAULT_LISTEN = "127.0.0.1:8006"
# On a Proxmox VE host 8006 is pveproxy's.
DEFAULT_PVE_LISTEN = "127.0.0.1:8106"


@click.command(name="serve")
@click.option("--listen", "listen_text", metavar="HOST:PORT",
              help=f"Where to listen (port 0: any free port; default {DEFAULT_LISTEN}, with "
                   f"--pve {DEFAULT_PVE_LISTEN}). An address other than loopback needs TLS or "
                   "--insecure.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The TLS certificate (PEM); serves HTTPS with --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The TLS certificate's private key (PEM).")
@click.option("--insecure", is_flag=True,
              help="Serve plain HTTP on a non-loopback address (tokens cross the network in clear).")
@click.option("--pve", is_flag=True,
              help="Proxmox VE host mode: this host's VMs ($QDISK_PVE_ROOT, $QDISK_PVE_NODE), "
                   "their audit and qcow2 cache settings (qdisk pve); VM configs stay Proxmox VE's.")
@pass_settings
def command(settings: Settings, listen_text: str | None, tls_cert: Path | None,
            tls_key: Path | None, insecure: bool, pve: bool) -> None:
    """Serve the API under /api2/json and the page until interrupted.

    Log in to the page, or call the API, with a token from `qdisk token create` (kept
    under QDISK_HOME). With --pve, Proxmox VE's own logins instead: the page opens logged
    in where the browser is logged in to the node's Proxmox VE interface (port 8006), API
    clients send a ticket or a Proxmox VE API token, and each may do what its privileges
    on /vms/<vmid> and /nodes/<node> allow (qdisk pve permissions)."""
    # FastAPI and uvicorn load only for this command: the others stay quick to start.
    from qdisk.web import server
    from qdisk.web.http import node_name

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = server.TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
    host = _checked_host(settings) if pve else None
    address = server.parse_listen(listen_text or (DEFAULT_PVE_LISTEN if pve else DEFAULT_LISTEN))
    listener = server.listen(address, tls, insecure=insecure)
    where = f"Proxmox VE node {host.node}, root {host.paths.root}" if host else f"node {node_name()}"
    click.echo(f"qdisk: serving the page and the API (/api2/json) at {listener.url} ({where})")
    if host is not None:
        _check_access_files(host)
    else:
        _check_tokens(settings)
    server.serve(settings, listener, pve=host)


def _check_tokens(settings: Settings) -> None:
    try:
        if not tokens.list_tokens(settings):
            warn("no API token exists yet: every request is refused until `qdisk token create "
                 "NAME` makes one")
    except tokens.TokenFileError as error:
        warn(f"{error}: every API token is refused until it is repaired")


def _check_access_files(host: PveHost) -> None:
    """Say which of Proxmox VE's logins cannot work (the files are read again as they change)."""
    if not host.paths.authkey_pub.is_file():
        warn(f"{host.paths.authkey_pub} does not exist: Proxmox VE login tickets are refused "
             "until it does (API tokens are not)")
    if not host.paths.user_cfg.is_file():
        warn(f"{host.paths.user_cfg} does not exist: only root@pam's login tickets are accepted "
             "until it does")


def _checked_host(settings: Settings) -> PveHost:
    """This Proxmox VE host; refused unless its cluster file system has this node."""
    host = pve_host(settings)
    nodes = host.nodes()
    if host.node not in nodes:
        raise PveRefusedError(f"node '{host.node}' is not a node of the cluster in "
                              f"{host.paths.nodes_dir} ({', '.join(nodes) or 'none'}): set "
                              f"{NODE_ENV} to this node's name")
    return host

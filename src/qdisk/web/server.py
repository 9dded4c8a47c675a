"""Running the API and the page: one uvicorn server on one listening socket.

The socket is bound here, before uvicorn starts, so a port of 0 picks a free port that
the caller learns (:attr:`Listener.url`), and an address in use is reported as such.
A non-loopback address needs TLS, unless the caller insists (``insecure``): tokens and
session cookies would otherwise cross the network in clear.

uvicorn waits for a request's headers and body forever, so a few hundred half-sent
requests would hold every socket: :class:`GuardedHttp` closes a connection whose request
does not arrive whole in time (:class:`ConnectionLimits`), and answers 503 to connections
beyond a cap. (A TLS handshake that never ends is the event loop's: closed after 60 s.)
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from qdisk.errors import InvalidInputError, QdiskError
from qdisk.pve.host import PveHost
from qdisk.settings import Settings
from qdisk.web.api import create_app

if TYPE_CHECKING:
    from asyncio import TimerHandle, Transport

# On SIGINT/SIGTERM, requests under way get this long to finish; idle keep-alive
# connections (a TLS client that never closes) are not waited for beyond it.
GRACEFUL_SHUTDOWN_SECONDS = 5
_LISTEN_RE = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")


class ServeError(QdiskError):
    """The server cannot start (address in use, unusable certificate, ...)."""


class ListenAddressError(InvalidInputError):
    """``--listen`` is not HOST:PORT, or needs TLS."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen(text: str) -> ListenAddress:
    """``127.0.0.1:8006``, ``[::1]:8006``, ``localhost:8006``, ``0.0.0.0:8006``."""
    match = _LISTEN_RE.fullmatch(text)
    if match is None or int(match["port"]) > 65535:
        raise ListenAddressError(f"--listen '{text}': expected HOST:PORT (IPv6 as [ADDRESS]:PORT, "
                                 "port 0 to 65535)")
    return ListenAddress(match["ipv6"] or match["host"], int(match["port"]))


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def check(self) -> None:
        """Load the pair once, so a bad certificate or key is reported before serving."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            raise ServeError(f"the TLS certificate {self.cert} and key {self.key} cannot be "
                             f"used: {getattr(error, 'strerror', None) or error}") from None


@dataclass
class Listener:
    """A bound, listening socket and the URL it serves."""

    sock: socket.socket
    tls: TlsFiles | None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}/"


def listen(address: ListenAddress, tls: TlsFiles | None, *, insecure: bool = False) -> Listener:
    """Bind and listen on ``address`` (a non-loopback address needs ``tls`` or ``insecure``)."""
    if not address.is_loopback and tls is None and not insecure:
        raise ListenAddressError(
            f"--listen {address.host}: not a loopback address: give --tls-cert and --tls-key "
            "(tokens and session cookies would cross the network in clear), or --insecure")
    if tls is not None:
        tls.check()
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServeError(f"cannot listen on {address.host}: {error.strerror}") from None
    family, kind, protocol, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {address.host}:{address.port}: {error.strerror}") from None
    return Listener(sock, tls)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take to send a request's headers (from connecting, or from
    the request's first byte), then its body; how many connections are served at once."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_connections: int = 256


_TOO_MANY_BODY = b'{"data":null,"message":"too many connections: try again later"}'
_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
             % (len(_TOO_MANY_BODY), _TOO_MANY_BODY))


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each part of a request and a cap
    on connections (:attr:`limits`, set by :func:`guarded_http`)."""

    limits = ConnectionLimits()
    _deadline: TimerHandle | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the request is read: the handler takes as long as it needs

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        # Aborted, not closed: a TLS close would wait (and count) for the peer's reply.
        self._deadline = None
        self.transport.abort()


def guarded_http(limits: ConnectionLimits) -> type[GuardedHttp]:
    """The protocol class uvicorn makes per connection, with ``limits``."""
    return type("GuardedHttp", (GuardedHttp,), {"limits": limits})


def make_server(settings: Settings, listener: Listener, *, pve: PveHost | None = None,
                limits: ConnectionLimits = ConnectionLimits()) -> uvicorn.Server:
    """The uvicorn server of the whole application (``pve``: over that Proxmox VE host's
    VMs); run it with ``server.run(sockets=[sock])``."""
    app = create_app(settings, secure_cookies=listener.tls is not None, pve=pve)
    tls = listener.tls
    config = uvicorn.Config(app, log_config=None, server_header=False, http=guarded_http(limits),
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                            ssl_certfile=str(tls.cert) if tls else None,
                            ssl_keyfile=str(tls.key) if tls else None)
    return uvicorn.Server(config)


def serve(settings: Settings, listener: Listener, *, pve: PveHost | None = None) -> None:
    """Serve until interrupted (SIGINT, SIGTERM): uvicorn finishes the requests under way."""
    try:
        make_server(settings, listener, pve=pve).run(sockets=[listener.sock])
    finally:
        listener.sock.close()

"""Connections that send half a request, or too many connections: the server closes a
request that does not arrive whole in time (plain and TLS) and refuses connections beyond
its cap, so idle sockets cannot lock everyone out."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests

from qdisk.web.server import ConnectionLimits

from web_helpers import WebHome, make_certificate, running_server

# Short deadlines keep the test quick; the defaults are checked to be seconds too.
LIMITS = ConnectionLimits(header_timeout=1.0, body_timeout=1.0, max_connections=8)
# Far beyond the deadlines: a connection still open then was never going to be closed.
WAIT = 8.0


@dataclass(frozen=True)
class Guarded:
    """A server with short deadlines and a small cap; ``cafile``: its certificate (TLS)."""

    url: str
    cafile: str | None

    def connect(self) -> socket.socket:
        parts = urlsplit(self.url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
        if self.cafile is None:
            return sock
        context = ssl.create_default_context(cafile=self.cafile)
        return context.wrap_socket(sock, server_hostname=parts.hostname)


@pytest.fixture(scope="module", params=["http", "https"])
def guarded(request: pytest.FixtureRequest, web_home: WebHome,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    tls = make_certificate(tmp_path_factory.mktemp("tls")) if request.param == "https" else None
    with running_server(web_home.settings, tls, limits=LIMITS) as url:
        yield Guarded(url, None if tls is None else str(tls.cert))


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes ``sock`` (what it sends before is read and dropped)."""
    started = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        pytest.fail(f"the server kept a half-sent request open for {WAIT} s")
    return time.monotonic() - started


def test_the_deadlines_are_seconds() -> None:
    defaults = ConnectionLimits()
    assert defaults.header_timeout <= 10 and defaults.body_timeout <= 10
    assert defaults.max_connections >= 100


@pytest.mark.parametrize("sent", [
    b"",
    b"GET /api2/json/version HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    b"PUT /api2/json/version HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nmemory=",
])
def test_a_half_sent_request_is_closed_within_seconds(
        guarded: Guarded, web_home: WebHome, sent: bytes) -> None:
    token = f"Authorization: PVEAPIToken={web_home.admin_token}\r\nHost:".encode()
    with guarded.connect() as sock:
        sock.sendall(sent.replace(b"Host:", token))
        assert _closed_after(sock) < LIMITS.header_timeout + LIMITS.body_timeout + 2


def test_connections_beyond_the_cap_are_refused_and_idle_ones_do_not_lock_anyone_out(
        guarded: Guarded, web_home: WebHome) -> None:
    with ExitStack() as idle:
        for _ in range(LIMITS.max_connections):
            idle.enter_context(guarded.connect())
        with guarded.connect() as extra:
            extra.sendall(b"GET /api2/json/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        # The idle ones are closed at their deadline; then everyone is served again.
        time.sleep(LIMITS.header_timeout + 1)
        response = requests.get(f"{guarded.url}/api2/json/version", timeout=WAIT,
                                verify=guarded.cafile or True,
                                headers={"Authorization": f"PVEAPIToken={web_home.admin_token}"})
        assert response.status_code == 200, response.text

"""What every handler gets through FastAPI dependencies: the server's state (kept on the
application, :func:`install_state`), who asks (:data:`Reader`, :data:`Writer`: the one
place requests are authenticated), the request's parameters (read only once the caller
is known), and the VM id of the path in Proxmox VE's ``pve-vmid`` format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Path, Request

from qdisk.config.vmconfig import parse_vmid
from qdisk.errors import InvalidInputError
from qdisk.pve.access.callers import AccessFiles
from qdisk.pve.host import PveHost
from qdisk.settings import Settings
from qdisk.web import pveauth
from qdisk.web.auth import COOKIE_NAME, CSRF_HEADER, Authenticator, Principal
from qdisk.web.http import parameter_error, read_parameters

T = TypeVar("T")
# CPU-bound work (a preview's checks) runs in this many worker threads: the event loop goes
# on answering everyone while it runs, and a flood of previews queues for these workers
# instead of filling FastAPI's thread pool. One: the GIL runs one at a time anyway.
CPU_WORKERS = 1


@dataclass(frozen=True)
class ServerState:
    """What the handlers serve: QDISK_HOME (``settings``: its VMs, and the tokens either
    way, and the accelerator VMs start with) or a Proxmox VE host (``pve``); how requests
    are authenticated (QDISK_HOME's tokens, or with ``pve`` the host's own users,
    ``access``); whether the session cookie is marked Secure (TLS)."""

    settings: Settings
    authenticator: Authenticator
    node: str
    pve: PveHost | None = None
    access: AccessFiles | None = None
    secure_cookies: bool = False
    # One limiter per application: it serves one event loop.
    cpu_workers: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(CPU_WORKERS))

    async def off_the_loop(self, work: Callable[[], T]) -> T:
        """``work()`` in a CPU worker thread (see :data:`CPU_WORKERS`)."""
        return await anyio.to_thread.run_sync(work, limiter=self.cpu_workers)


def install_state(app: FastAPI, state: ServerState) -> None:
    app.state.qdisk = state


async def server_state(request: Request) -> ServerState:
    state = request.app.state.qdisk
    assert isinstance(state, ServerState)
    return state


State = Annotated[ServerState, Depends(server_state)]


async def reader(request: Request, state: State) -> Principal:
    """Who asks: a token in the Authorization header, or the page's session (with its
    CSRF token on anything but a read); on a Proxmox VE host, its own users' tickets and
    API tokens (:mod:`qdisk.web.pveauth`). Refused with 401 before anything else is read."""
    if state.access is not None:
        return pveauth.authenticate(
            state.access, request.method, request.headers.get("authorization"),
            request.cookies.get(COOKIE_NAME), request.headers.get(CSRF_HEADER))
    return state.authenticator.authenticate(
        request.method, request.headers.get("authorization"),
        request.cookies.get(COOKIE_NAME), request.headers.get(CSRF_HEADER))


Reader = Annotated[Principal, Depends(reader)]


async def writer(principal: Reader) -> Principal:
    """Who asks, if allowed to change things (403 for a read-only token)."""
    principal.require_write()
    return principal


Writer = Annotated[Principal, Depends(writer)]


async def parameters(request: Request, _principal: Reader) -> dict[str, str]:
    """The request's parameters (query string and body), read only after the caller has
    been authenticated: an anonymous client gets its 401 before its body is read."""
    return await read_parameters(request)


Parameters = Annotated[dict[str, str], Depends(parameters)]
# The login's parameters: the one body read before the caller is known (it holds the token).
LoginParameters = Annotated[dict[str, str], Depends(read_parameters)]
Node = Annotated[str, Path(description="The node: this host's name.")]


async def path_vmid(vmid: Annotated[str, Path(description="The VM id (100 to 999999999).")]) -> int:
    """The ``{vmid}`` of the path, in Proxmox VE's ``pve-vmid`` format only."""
    return checked_vmid(vmid)


def checked_vmid(text: str, name: str = "vmid") -> int:
    try:
        return parse_vmid(text)
    except InvalidInputError as error:
        raise parameter_error({name: str(error)}) from None


Vmid = Annotated[int, Depends(path_vmid)]

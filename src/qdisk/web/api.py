"""The JSON API in Proxmox VE's dialect, under ``/api2/json``, and the page.

Every answer is ``{"data": ...}``; a parameter error is HTTP 400 with
``{"data": null, "errors": {"<param>": "<message>"}}``, other errors carry a
``message``. Writes also return ``result``, what qdisk did (Proxmox VE would return a
task id). Parameters come form-encoded (``curl``, proxmoxer) or as a JSON object.

The endpoints are module-level handlers that reach the server's state and the caller
through FastAPI dependencies (:mod:`qdisk.web.context`): the login (:mod:`qdisk.web.sessions`),
QDISK_HOME's VMs (:mod:`qdisk.web.homeapi`) or, with ``--pve``, a Proxmox VE host's
qcow2 caches (:mod:`qdisk.web.pveapi`), where those of QDISK_HOME's VMs answer 501.
The OpenAPI document is ``/api2/openapi.json``; everything but the login and the
page's own files needs authentication (:mod:`qdisk.web.auth`).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from qdisk import __version__, storage
from qdisk.pve.access.callers import API_TOKEN_PREFIX, AccessFiles
from qdisk.pve.host import PveHost
from qdisk.settings import Settings
from qdisk.web import homeapi, pveapi, sessions
from qdisk.web.auth import COOKIE_NAME, CSRF_HEADER, Authenticator
from qdisk.web.context import Reader, ServerState, State, install_state
from qdisk.web.http import ApiError, SecurityHeaders, data, install_error_handlers, node_name
from qdisk.web.tokens import TokenStore

API_PREFIX = "/api2/json"
OPENAPI_PATH = "/api2/openapi.json"


def create_app(settings: Settings, *, secure_cookies: bool = False,
               pve: PveHost | None = None) -> FastAPI:
    """The whole server: API, OpenAPI document and page. ``secure_cookies`` marks the
    session cookie Secure (served over TLS); VMs start with ``settings.accel``. With
    ``pve``, the VMs are that Proxmox VE host's and only their qcow2 cache is served;
    who may ask is then the host's own users and API tokens, with their privileges
    (:mod:`qdisk.web.pveauth`), else QDISK_HOME's tokens (``settings``)."""
    app = FastAPI(title="qdisk API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Proxmox VE's API dialect for qdisk's VMs and their qcow2 cache."
                  if pve is None else "Proxmox VE's API dialect for the qcow2 cache of a "
                                      "Proxmox VE host's VMs (qdisk serve --pve).")
    install_state(app, ServerState(settings, Authenticator(TokenStore(settings)), node_name(),
                                   pve=pve, access=None if pve is None else AccessFiles(pve.paths),
                                   secure_cookies=secure_cookies))
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(sessions.router)
    router.add_api_route("/version", version, methods=["GET"], tags=["nodes"],
                         summary="qdisk's version")
    if pve is None:
        storage.ensure_default(settings)
        router.include_router(homeapi.router)
    else:
        router.include_router(pveapi.router)
        _not_served_routes(router, homeapi.router, pveapi.router)
    app.include_router(router)
    app.add_api_route(OPENAPI_PATH, openapi_document, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(packages=[("qdisk.web", "static")]), name="static")
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    return app


async def version(state: State, _principal: Reader) -> JSONResponse:
    return data({"version": __version__, "release": __version__, "product": "qdisk",
                 "mode": "home" if state.pve is None else "pve"})


async def openapi_document(request: Request, _principal: Reader) -> JSONResponse:
    return JSONResponse(_openapi(request.app))


async def page(state: State) -> HTMLResponse:
    """The page; on a Proxmox VE host its body says so (``data-mode="pve"``), so that a
    visitor without a ticket is sent to Proxmox VE's login instead of a token form."""
    text = (resources.files("qdisk.web") / "static" / "index.html").read_text(encoding="utf-8")
    if state.pve is not None:
        text = text.replace("<body>", '<body data-mode="pve">', 1)
    return HTMLResponse(text)


async def _not_served(request: Request, _principal: Reader) -> JSONResponse:
    raise ApiError(501, f"{request.method} {request.url.path}: not served on a Proxmox VE "
                        "host (qdisk serve --pve): VM configs, storages and starting or "
                        "stopping VMs are Proxmox VE's own API's; qdisk serves the qcow2 "
                        "cache: /nodes/{node}/qdisk/audit, /nodes/{node}/qemu/{vmid}/qdisk/cache")


def _not_served_routes(router: APIRouter, home: APIRouter, served: APIRouter) -> None:
    """Answer the endpoints of QDISK_HOME's VMs that ``served`` does not have with 501:
    on a Proxmox VE host, VM configs, storages and VMs' states are Proxmox VE's."""
    taken = {(route.path, method) for route in served.routes if isinstance(route, APIRoute)
             for method in route.methods or ()}
    for route in home.routes:
        assert isinstance(route, APIRoute)
        methods = sorted(method for method in route.methods or () if (route.path, method) not in taken)
        if methods:
            router.add_api_route(route.path, _not_served, methods=methods, include_in_schema=False,
                                 name=f"not_served_{route.name}")


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        document.setdefault("components", {})["securitySchemes"] = {
            "PVEAPIToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                            "description": f"{API_TOKEN_PREFIX}USER@REALM!TOKENID=SECRET"},
            "PVEAuthCookie": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME,
                              "description": (f"From POST {API_PREFIX}/access/ticket"
                                              if app.state.qdisk.pve is None else
                                              "Proxmox VE's login ticket (its interface's cookie, or "
                                              f"Authorization: {COOKIE_NAME}=TICKET)")
                                             + f"; writes also send the {CSRF_HEADER} header"}}
        document["security"] = [{"PVEAPIToken": []}, {"PVEAuthCookie": []}]
        app.openapi_schema = document
    return app.openapi_schema

"""The JSON API in Proxmox VE's dialect, under ``/api2/json``, and the page.

Every answer is ``{"data": ...}``; a parameter error is HTTP 400 with
``{"data": null, "errors": {"<param>": "<message>"}}``, other errors carry a
``message``. Writes also return ``result``, what qdisk did (Proxmox VE would return a
task id). Parameters come form-encoded (``curl``, proxmoxer) or as a JSON object.

Every endpoint calls the functions the ``qdisk vm`` commands call (:mod:`qdisk.vm`) or
the views of :mod:`qdisk.vm.cacheview` and :mod:`qdisk.storage.content`; nothing here decides anything about VMs.
With ``--pve`` (a Proxmox VE host's VMs) the VM endpoints are :mod:`qdisk.web.pveapi`'s
instead, and those of QDISK_HOME's VMs answer 501.
The OpenAPI document is ``/api2/openapi.json``; everything but the login and the
page's own files needs authentication (:mod:`qdisk.web.auth`).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from qdisk import __version__, storage
from qdisk.config.drive import is_drive_key
from qdisk.config.propstring import split_list
from qdisk.config.vmoptions import known_key
from qdisk.errors import InvalidInputError, InvalidOptionsError
from qdisk.pve.host import PveHost
from qdisk.qemu.cacheview import option_descriptors
from qdisk.settings import Settings
from qdisk.storage import content as storage_content
from qdisk.vm import cacheview, changes, lifecycle, store, views
from qdisk.web.auth import COOKIE_NAME, CSRF_HEADER, SESSION_LIFETIME, Authenticator, AuthError, Principal
from qdisk.web.http import (
    MISSING_PARAMETER,
    UNKNOWN_PARAMETER,
    ApiError,
    PrincipalDependency,
    SecurityHeaders,
    body_parameters,
    data,
    form_body,
    install_error_handlers,
    node_name,
    node_parameter,
    only,
    parameter_error,
    problems_by_key,
    vmid_parameter,
)
from qdisk.web.pveapi import pve_routes
from qdisk.web.tokens import TokenStore

log = logging.getLogger(__name__)

API_PREFIX = "/api2/json"
OPENAPI_PATH = "/api2/openapi.json"
# Parameters of Proxmox VE's config update that qdisk does not implement.
UNSUPPORTED_CONFIG_PARAMETERS = frozenset({"revert", "skiplock", "force", "background_delay"})


# --- the application ----------------------------------------------------------------------


def create_app(settings: Settings, *, secure_cookies: bool = False,
               accel: str | None = None, pve: PveHost | None = None) -> FastAPI:
    """The whole server: API, OpenAPI document and page. ``secure_cookies`` marks the
    session cookie Secure (served over TLS); ``accel`` is passed to ``vm.start``. With
    ``pve``, the VMs are that Proxmox VE host's and only their qcow2 cache is served;
    the tokens are QDISK_HOME's (``settings``) either way."""
    app = FastAPI(title="qdisk API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Proxmox VE's API dialect for qdisk's VMs and their qcow2 cache."
                  if pve is None else "Proxmox VE's API dialect for the qcow2 cache of a "
                                      "Proxmox VE host's VMs (qdisk serve --pve).")
    authenticator = Authenticator(TokenStore(settings))

    async def reader(request: Request) -> Principal:
        try:
            return authenticator.authenticate(
                request.method, request.headers.get("authorization"),
                request.cookies.get(COOKIE_NAME), request.headers.get(CSRF_HEADER))
        except AuthError as error:
            raise ApiError(error.status, error.message) from None

    async def writer(principal: Principal = Depends(reader)) -> Principal:
        try:
            principal.require_write()
        except AuthError as error:
            raise ApiError(error.status, error.message) from None
        return principal

    router = APIRouter(prefix=API_PREFIX)

    # -- access --

    @router.post("/access/ticket", tags=["access"],
                 openapi_extra=form_body({"token": "USER@REALM!NAME=SECRET"}, required=("token",)),
                 summary="Log in with an API token (the page): a session cookie and a CSRF token")
    async def login(parameters: dict[str, str] = Depends(body_parameters)) -> JSONResponse:
        only(parameters, ("token",))
        if "token" not in parameters:
            raise parameter_error({"token": MISSING_PARAMETER})
        try:
            session_id, session, read_only = authenticator.login(parameters["token"])
        except AuthError as error:
            raise ApiError(error.status, error.message) from None
        response = data({"username": session.token_id, "CSRFPreventionToken": session.csrf,
                         "read-only": read_only})
        response.set_cookie(COOKIE_NAME, session_id, max_age=SESSION_LIFETIME, path="/",
                            httponly=True, secure=secure_cookies, samesite="strict")
        return response

    @router.get("/access/ticket", tags=["access"],
                summary="Who is logged in, and the session's CSRF token")
    async def session_info(principal: Principal = Depends(reader)) -> JSONResponse:
        return data({"username": principal.token_id, "CSRFPreventionToken": principal.csrf,
                     "read-only": principal.read_only})

    @router.delete("/access/ticket", tags=["access"], summary="Log out (end the session)")
    async def logout(principal: Principal = Depends(reader)) -> JSONResponse:
        if principal.session_id is not None:
            authenticator.logout(principal.session_id)
        response = data(None)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, secure=secure_cookies,
                               samesite="strict")
        return response

    @router.get("/version", tags=["nodes"], summary="qdisk's version")
    async def version(_principal: Principal = Depends(reader)) -> JSONResponse:
        return data({"version": __version__, "release": __version__, "product": "qdisk",
                     "mode": "home" if pve is None else "pve"})

    # -- the VMs: QDISK_HOME's, or a Proxmox VE host's qcow2 caches --

    home = _home_routes(settings, reader, writer, accel=accel)
    if pve is None:
        storage.ensure_default(settings)
        router.include_router(home)
    else:
        served = pve_routes(pve, reader, writer)
        router.include_router(served)
        _not_served(router, home, served, reader)

    app.include_router(router)

    # -- the OpenAPI document and the page --

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document(_principal: Principal = Depends(reader)) -> JSONResponse:
        return JSONResponse(_openapi(app))

    static = resources.files("qdisk.web") / "static"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(packages=[("qdisk.web", "static")]), name="static")
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    return app


def _home_routes(settings: Settings, reader: PrincipalDependency, writer: PrincipalDependency,
                 *, accel: str | None) -> APIRouter:
    """The endpoints of QDISK_HOME's VMs: configs, states, their qcow2 cache, storages."""
    node = node_name()

    def check_node(name: str) -> None:
        if name != node:
            raise parameter_error({"node": f"no such node '{name}' (this host is '{node}')"})

    def check_vm(name: str, vmid: int) -> None:
        check_node(name)
        try:
            path = store.config_path(settings, vmid)
        except InvalidInputError as error:
            raise parameter_error({"vmid": str(error)}) from None
        if not path.exists():
            raise ApiError(404, f"VM {vmid} does not exist")

    # Handlers that only read a few small files (a config, image headers) are coroutines:
    # they run on the event loop. A thread hop per request, and the GIL handed between
    # dozens of threads, would multiply their latency under load. Handlers that wait (VM
    # start and stop, QMP, the VM lock) are plain functions: FastAPI runs them in threads.
    router = APIRouter()
    config_body = form_body({"delete": "Keys to remove, a list (commas)",
                             "digest": "The digest the config was read with: refused if stale"},
                            additional="Config keys and their values (memory, scsi0, ...)")

    # -- nodes and VMs --

    @router.get("/nodes", tags=["nodes"], summary="The node (this host)")
    async def nodes(_principal: Principal = Depends(reader)) -> JSONResponse:
        return data([{"node": node, "status": "online", "type": "node"}])

    @router.get("/nodes/{node}/qemu", tags=["qemu"], summary="Every VM: vmid, name, status")
    def vm_list(node: str = node_parameter(), _principal: Principal = Depends(reader)) -> JSONResponse:
        check_node(node)
        return data([{"vmid": item.vmid, "name": item.name, "status": item.status}
                     for item in views.list_vms(settings)])

    @router.get("/nodes/{node}/qemu/{vmid}/config", tags=["qemu"],
                summary="The VM's config (pending values merged, unless current=1) and its digest")
    async def vm_config(node: str = node_parameter(), vmid: int = vmid_parameter(),
                  current: bool = Query(False, description="Only the applied values."),
                  _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        view = views.config_view(settings, vmid, current=current)
        values, digest = view.values, view.digest
        return data({**values, "digest": digest})

    def update_config(node: str = node_parameter(), vmid: int = vmid_parameter(),
                      parameters: dict[str, str] = Depends(body_parameters),
                      _principal: Principal = Depends(writer)) -> JSONResponse:
        check_vm(node, vmid)
        requested = dict(parameters)
        digest, delete_text = requested.pop("digest", None), requested.pop("delete", "")
        errors = {name: "not supported by qdisk" for name in requested
                  if name in UNSUPPORTED_CONFIG_PARAMETERS}
        errors.update({name: UNKNOWN_PARAMETER for name in requested
                       if name not in errors and not known_key(name)})
        if errors:
            raise parameter_error(errors)
        deletes = split_list(delete_text)
        if not requested and not deletes:
            raise ApiError(400, "no options specified")
        try:
            result = changes.set_options(settings, vmid, requested, deletes, digest=digest)
        except InvalidOptionsError as error:
            raise parameter_error(problems_by_key(error)) from None
        outcome = {"applied": list(result.applied), "pending": list(result.pending),
                   "notes": list(result.notes), "warnings": list(result.warnings)}
        not_taken = result.error()
        if not_taken is not None:
            raise not_taken
        return data(None, result=outcome)

    for method, summary in (
            ("PUT", "Change the VM's config: config keys, delete (a list), digest"),
            ("POST", "As PUT (Proxmox VE runs it as a task; qdisk is done when it answers)")):
        router.add_api_route("/nodes/{node}/qemu/{vmid}/config", update_config, methods=[method],
                             name=f"update_config_{method.lower()}", tags=["qemu"],
                             openapi_extra=config_body, summary=summary)

    @router.get("/nodes/{node}/qemu/{vmid}/pending", tags=["qemu"],
                summary="Per key: the applied value, the pending value, a pending deletion")
    async def vm_pending(node: str = node_parameter(), vmid: int = vmid_parameter(),
                   _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        return data([item.as_json() for item in views.pending_items(settings, vmid)])

    @router.get("/nodes/{node}/qemu/{vmid}/status/current", tags=["qemu"],
                summary="Whether the VM runs; its pid, QEMU's memory and the cache applied per disk")
    def vm_status(node: str = node_parameter(), vmid: int = vmid_parameter(),
                  _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        name = views.config_values(settings, vmid, current=True).get("name")
        return data({**views.status(settings, vmid).as_json(), "name": name})

    @router.post("/nodes/{node}/qemu/{vmid}/status/start", tags=["qemu"],
                 summary="Start the VM (pending changes are applied first)")
    def vm_start(node: str = node_parameter(), vmid: int = vmid_parameter(),
                 parameters: dict[str, str] = Depends(body_parameters),
                 _principal: Principal = Depends(writer)) -> JSONResponse:
        check_vm(node, vmid)
        only(parameters, ())
        result = lifecycle.start(settings, vmid, accel=accel)
        return data(None, result={"pid": result.pid, "syntax": result.syntax,
                                  "accel": result.accel, "warnings": list(result.warnings)})

    @router.post("/nodes/{node}/qemu/{vmid}/status/stop", tags=["qemu"],
                 openapi_extra=form_body({"timeout": "Seconds to wait before killing QEMU (0-3600)"}),
                 summary="Stop the VM: QEMU is asked to quit, killed after timeout seconds")
    def vm_stop(node: str = node_parameter(), vmid: int = vmid_parameter(),
                parameters: dict[str, str] = Depends(body_parameters),
                _principal: Principal = Depends(writer)) -> JSONResponse:
        check_vm(node, vmid)
        only(parameters, ("timeout",))
        timeout = lifecycle.DEFAULT_STOP_TIMEOUT
        if "timeout" in parameters:
            try:
                timeout = float(parameters["timeout"])
            except ValueError:
                timeout = -1.0
            if not 0 <= timeout <= 3600:
                raise parameter_error({"timeout": "must be a number of seconds from 0 to 3600"})
        result = lifecycle.stop(settings, vmid, timeout=timeout)
        return data(None, result={"pid": result.pid, "killed": result.killed,
                                  "warnings": list(result.warnings)})

    # -- the qcow2 cache --

    @router.get("/nodes/{node}/qemu/{vmid}/qcow2-cache", tags=["qdisk"],
                summary="The cache plan per disk and layer: auto size, default, configured, "
                        "applied; coverage and memory")
    def vm_cache(node: str = node_parameter(), vmid: int = vmid_parameter(),
                 _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        return data({"options": option_descriptors(),
                     "disks": cacheview.disk_cache_plans(settings, vmid)})

    @router.post("/nodes/{node}/qemu/{vmid}/qcow2-cache/preview", tags=["qdisk"],
                 openapi_extra=form_body({"disk": "The drive key (scsi0, virtio1, ...)",
                                          "drive": "The drive string being edited"},
                                         required=("disk", "drive")),
                 summary="For a drive string being edited (disk, drive): its problems per "
                         "property, or the coverage and memory per layer it would give")
    async def vm_cache_preview(node: str = node_parameter(), vmid: int = vmid_parameter(),
                         parameters: dict[str, str] = Depends(body_parameters),
                         _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        only(parameters, ("disk", "drive"))
        missing = {name: MISSING_PARAMETER for name in ("disk", "drive") if name not in parameters}
        if missing:
            raise parameter_error(missing)
        if not is_drive_key(parameters["disk"]):
            raise parameter_error({"disk": f"'{parameters['disk']}' is not a drive key"})
        return data(cacheview.preview_drive(settings, parameters["disk"], parameters["drive"]))

    # -- storages --

    @router.get("/nodes/{node}/storage", tags=["storage"], summary="The storages and their space")
    def storage_list(node: str = node_parameter(), _principal: Principal = Depends(reader)) -> JSONResponse:
        check_node(node)
        return data(storage_content.storage_status(settings))

    @router.get("/nodes/{node}/storage/{storage}/content", tags=["storage"],
                summary="The volumes of a storage (content and vmid filter)")
    def storage_volumes(node: str = node_parameter(),
                        storage_id: str = Path(description="The storage id.", alias="storage"),
                        content: str | None = Query(None, description="images or iso"),
                        vmid: int | None = Query(None, description="Only this VM's volumes."),
                        _principal: Principal = Depends(reader)) -> JSONResponse:
        check_node(node)
        try:
            volumes = storage_content.storage_content(settings, storage_id, content=content, vmid=vmid)
        except storage.StorageError as error:
            raise parameter_error({"storage": str(error)}) from None
        return data(volumes)

    return router


def _not_served(router: APIRouter, home: APIRouter, served: APIRouter,
                reader: PrincipalDependency) -> None:
    """Answer the endpoints of QDISK_HOME's VMs that ``served`` does not have with 501:
    on a Proxmox VE host, VM configs, storages and VMs' states are Proxmox VE's."""
    taken = {(route.path, method) for route in served.routes if isinstance(route, APIRoute)
             for method in route.methods or ()}

    async def not_served(request: Request, _principal: Principal = Depends(reader)) -> JSONResponse:
        raise ApiError(501, f"{request.method} {request.url.path}: not served on a Proxmox VE "
                            "host (qdisk serve --pve): VM configs, storages and starting or "
                            "stopping VMs are Proxmox VE's own API's; qdisk serves the qcow2 "
                            "cache: /nodes/{node}/qdisk/audit, /nodes/{node}/qemu/{vmid}/qdisk/cache")

    for route in home.routes:
        assert isinstance(route, APIRoute)
        methods = sorted(method for method in route.methods or () if (route.path, method) not in taken)
        if methods:
            router.add_api_route(route.path, not_served, methods=methods, include_in_schema=False,
                                 name=f"not_served_{route.name}")


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        document.setdefault("components", {})["securitySchemes"] = {
            "PVEAPIToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                            "description": "PVEAPIToken=USER@REALM!TOKENID=SECRET"},
            "PVEAuthCookie": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME,
                              "description": f"From POST {API_PREFIX}/access/ticket; writes "
                                             f"also send the {CSRF_HEADER} header"}}
        document["security"] = [{"PVEAPIToken": []}, {"PVEAuthCookie": []}]
        app.openapi_schema = document
    return app.openapi_schema

"""The JSON API in Proxmox VE's dialect, under ``/api2/json``, and the page.

Every answer is ``{"data": ...}``; a parameter error is HTTP 400 with
``{"data": null, "errors": {"<param>": "<message>"}}``, other errors carry a
``message``. Writes also return ``result``, what qdisk did (Proxmox VE would return a
task id). Parameters come form-encoded (``curl``, proxmoxer) or as a JSON object.

Every endpoint calls the functions the ``qdisk vm`` commands call (:mod:`qdisk.vm`) or
the thin views of :mod:`qdisk.web.operations`; nothing here decides anything about VMs.
The OpenAPI document is ``/api2/openapi.json``; everything but the login and the
page's own files needs authentication (:mod:`qdisk.web.auth`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qdisk import __version__, storage, vmconfig
from qdisk.cache.options import QCOW2_CACHE_KEYS
from qdisk.drive import is_drive_key, schema_of
from qdisk.errors import InvalidInputError, QdiskError
from qdisk.propstring import split_list
from qdisk.settings import Settings
from qdisk.vm import changes, lifecycle, views
from qdisk.vm.errors import InvalidOptionsError, StaleDigestError
from qdisk.vmoptions import known_key
from qdisk.web import operations
from qdisk.web.auth import COOKIE_NAME, CSRF_HEADER, SESSION_LIFETIME, Authenticator, AuthError, Principal
from qdisk.web.tokens import TokenStore

log = logging.getLogger(__name__)

API_PREFIX = "/api2/json"
OPENAPI_PATH = "/api2/openapi.json"
# A config change is a few KiB and a few dozen keys at most; anything far larger is refused.
MAX_BODY_BYTES = 256 * 1024
MAX_PARAMETERS = 1000
# Proxmox VE's messages for parameters it does not know, or misses.
UNKNOWN_PARAMETER = "property is not defined in schema and the schema does not allow additional properties"
MISSING_PARAMETER = "property is missing and it is not optional"
# Parameters of Proxmox VE's config update that qdisk does not implement.
UNSUPPORTED_CONFIG_PARAMETERS = frozenset({"revert", "skiplock", "force", "background_delay"})
# Units and words for the page's qcow2 cache fields (the ranges come from the drive schema).
QCOW2_OPTION_UNITS = {
    "qcow2-cache-size": "MiB", "qcow2-cache-size-based-on-disk": "",
    "qcow2-l2-cache-size": "MiB", "qcow2-l2-cache-entry-size": "bytes",
    "qcow2-refcount-cache-size": "MiB", "qcow2-cache-clean-interval": "seconds",
}
_UNKNOWN_OPTION_RE = re.compile(r"unknown option '(?P<key>[^']*)'")
_KEYED_PROBLEM_RE = re.compile(r"(?P<key>[a-z][a-z_]*\d*)(?:\.[A-Za-z0-9_-]+)?: ", re.ASCII)


class ApiError(Exception):
    """An answer other than 200: a message, and per parameter problems for a 400."""

    def __init__(self, status: int, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors or {})


def parameter_error(errors: Mapping[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.", errors)


def data(value: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({"data": value, **extra})


def node_name() -> str:
    """The host's name as Proxmox VE names its node: the short host name."""
    return socket.gethostname().split(".")[0]


# --- parameters ---------------------------------------------------------------------------


def _text(name: str, value: Any) -> str:
    """A JSON parameter as Proxmox VE reads it: a string, a number or a boolean (1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    raise parameter_error({name: "type check failed - expected a string, number or boolean"})


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
    return bytes(body)


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                         max_num_fields=MAX_PARAMETERS)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, f"the form-encoded body cannot be read (not UTF-8 key=value pairs, "
                            f"or more than {MAX_PARAMETERS})") from None


def _json_object(body: bytes) -> list[tuple[str, str]]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "the JSON body cannot be read") from None
    if not isinstance(value, dict) or len(value) > MAX_PARAMETERS:
        raise ApiError(400, f"the JSON body must be an object of at most {MAX_PARAMETERS} parameters")
    return [(name, _text(name, item)) for name, item in value.items() if item is not None]


async def body_parameters(request: Request) -> dict[str, str]:
    """The request's parameters: the query string and the body (form-encoded or JSON), as
    Proxmox VE merges them. A parameter given twice, or with a NUL character, is refused."""
    pairs = list(request.query_params.multi_items())
    body = await _body(request)
    if body.strip():
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/json":
            pairs += _json_object(body)
        elif media_type in ("application/x-www-form-urlencoded", ""):
            pairs += _form(body)
        else:
            raise ApiError(415, f"unsupported content type '{media_type}' (send "
                                "application/x-www-form-urlencoded or application/json)")
    parameters: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            problems[name] = "parameter given more than once"
        elif "\0" in name or "\0" in value:
            # A command line cannot carry one either: the checks behind the API never met it.
            problems[name.replace("\0", "\\0")] = "value must not contain a NUL character"
        parameters[name] = value
    if problems:
        raise parameter_error(problems)
    return parameters


def _only(parameters: Mapping[str, str], allowed: Sequence[str]) -> None:
    unknown = {name: UNKNOWN_PARAMETER for name in parameters if name not in allowed}
    if unknown:
        raise parameter_error(unknown)


def _problems_by_key(lines: Sequence[str], deletes: Sequence[str]) -> dict[str, str]:
    """The lines of an InvalidOptionsError (``scsi0.size: ...``, ``unknown option 'x'``) as
    Proxmox VE's per-parameter errors; each line is kept whole, under its key."""
    errors: dict[str, list[str]] = {}
    for line in lines:
        unknown = _UNKNOWN_OPTION_RE.fullmatch(line)
        keyed = _KEYED_PROBLEM_RE.match(line)
        if unknown is not None:
            key = "delete" if unknown["key"] in deletes else unknown["key"]
        else:
            key = keyed["key"] if keyed is not None else "config"
        errors.setdefault(key, []).append(line)
    return {key: "\n".join(messages) for key, messages in errors.items()}


# --- error answers ------------------------------------------------------------------------


def _error_response(status: int, message: str, errors: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"data": None, "message": message}
    if errors:
        body["errors"] = dict(errors)
    return JSONResponse(body, status_code=status)


def _validation_message(error: Mapping[str, Any]) -> str:
    if error.get("type") == "int_parsing":
        return f"type check ('integer') failed - got '{error.get('input')}'"
    if error.get("type") == "bool_parsing":
        return f"type check ('boolean') failed - got '{error.get('input')}'"
    return str(error.get("msg", "invalid value"))


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return _error_response(error.status, error.message, error.errors)

    async def auth_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AuthError)
        return _error_response(error.status, error.message)

    async def validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        errors = {str(item["loc"][-1]): _validation_message(item) for item in error.errors()}
        return _error_response(400, "Parameter verification failed.", errors)

    async def invalid_options(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, InvalidOptionsError)
        return _error_response(400, "Parameter verification failed.",
                               _problems_by_key(error.problems, ()))

    async def stale_digest(_request: Request, error: Exception) -> JSONResponse:
        return _error_response(400, str(error), {"digest": str(error)})

    async def invalid_input(_request: Request, error: Exception) -> JSONResponse:
        return _error_response(400, str(error))

    async def qdisk_error(_request: Request, error: Exception) -> JSONResponse:
        return _error_response(500, str(error))

    async def http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        return _error_response(error.status_code, str(error.detail))

    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error_response(500, f"the server failed: {type(error).__name__}: {error}")

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
        (ApiError, api_error), (AuthError, auth_error), (RequestValidationError, validation_error),
        (InvalidOptionsError, invalid_options), (StaleDigestError, stale_digest),
        (InvalidInputError, invalid_input), (QdiskError, qdisk_error),
        (StarletteHTTPException, http_error), (Exception, unexpected)]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)


# --- security headers ---------------------------------------------------------------------

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Headers on every answer: the page loads only its own files and is never framed;
    API answers are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/api2/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS,
                                      *([_NO_STORE] if api else [])]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- the application ----------------------------------------------------------------------


def create_app(settings: Settings, *, secure_cookies: bool = False,
               accel: str | None = None) -> FastAPI:
    """The whole server: API, OpenAPI document and page. ``secure_cookies`` marks the
    session cookie Secure (served over TLS); ``accel`` is passed to ``vm.start``."""
    app = FastAPI(title="qdisk API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Proxmox VE's API dialect for qdisk's VMs and their qcow2 cache.")
    authenticator = Authenticator(TokenStore(settings))
    node = node_name()
    storage.ensure_default(settings)

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

    def check_node(name: str) -> None:
        if name != node:
            raise parameter_error({"node": f"no such node '{name}' (this host is '{node}')"})

    def check_vm(name: str, vmid: int) -> None:
        check_node(name)
        try:
            path = vmconfig.config_path(settings, vmid)
        except InvalidInputError as error:
            raise parameter_error({"vmid": str(error)}) from None
        if not path.exists():
            raise ApiError(404, f"VM {vmid} does not exist")

    # Handlers that only read a few small files (a config, image headers) are coroutines:
    # they run on the event loop. A thread hop per request, and the GIL handed between
    # dozens of threads, would multiply their latency under load. Handlers that wait (VM
    # start and stop, QMP, the VM lock) are plain functions: FastAPI runs them in threads.
    router = APIRouter(prefix=API_PREFIX)
    config_body = _form_body({"delete": "Keys to remove, a list (commas)",
                              "digest": "The digest the config was read with: refused if stale"},
                             additional="Config keys and their values (memory, scsi0, ...)")

    # -- access --

    @router.post("/access/ticket", tags=["access"],
                 openapi_extra=_form_body({"token": "USER@REALM!NAME=SECRET"}, required=("token",)),
                 summary="Log in with an API token (the page): a session cookie and a CSRF token")
    async def login(parameters: dict[str, str] = Depends(body_parameters)) -> JSONResponse:
        _only(parameters, ("token",))
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

    # -- nodes and VMs --

    @router.get("/nodes", tags=["nodes"], summary="The node (this host)")
    async def nodes(_principal: Principal = Depends(reader)) -> JSONResponse:
        return data([{"node": node, "status": "online", "type": "node"}])

    @router.get("/nodes/{node}/qemu", tags=["qemu"], summary="Every VM: vmid, name, status")
    def vm_list(node: str = _node_parameter(), _principal: Principal = Depends(reader)) -> JSONResponse:
        check_node(node)
        return data([{"vmid": item.vmid, "name": item.name, "status": item.status}
                     for item in views.list_vms(settings)])

    @router.get("/nodes/{node}/qemu/{vmid}/config", tags=["qemu"],
                summary="The VM's config (pending values merged, unless current=1) and its digest")
    async def vm_config(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                  current: bool = Query(False, description="Only the applied values."),
                  _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        view = views.config_view(settings, vmid, current=current)
        values, digest = view.values, view.digest
        return data({**values, "digest": digest})

    def update_config(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
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
            raise parameter_error(_problems_by_key(error.problems, deletes)) from None
        outcome = {"applied": list(result.applied), "pending": list(result.pending),
                   "notes": list(result.notes), "warnings": list(result.warnings)}
        if result.failed:
            raise ApiError(500, f"VM {vmid}: not applied to the running VM, the change stays "
                                f"pending: {'; '.join(result.failed)}")
        if result.refused:
            raise ApiError(400, f"VM {vmid}: QEMU refused, the change stays pending",
                           {line.split(":", 1)[0]: line.split(": ", 1)[-1] for line in result.refused})
        return data(None, result=outcome)

    for method, summary in (
            ("PUT", "Change the VM's config: config keys, delete (a list), digest"),
            ("POST", "As PUT (Proxmox VE runs it as a task; qdisk is done when it answers)")):
        router.add_api_route("/nodes/{node}/qemu/{vmid}/config", update_config, methods=[method],
                             name=f"update_config_{method.lower()}", tags=["qemu"],
                             openapi_extra=config_body, summary=summary)

    @router.get("/nodes/{node}/qemu/{vmid}/pending", tags=["qemu"],
                summary="Per key: the applied value, the pending value, a pending deletion")
    async def vm_pending(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                   _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        return data([item.as_json() for item in views.pending_items(settings, vmid)])

    @router.get("/nodes/{node}/qemu/{vmid}/status/current", tags=["qemu"],
                summary="Whether the VM runs; its pid, QEMU's memory and the cache applied per disk")
    def vm_status(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                  _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        name = views.config_values(settings, vmid, current=True).get("name")
        return data({**views.status(settings, vmid).as_json(), "name": name})

    @router.post("/nodes/{node}/qemu/{vmid}/status/start", tags=["qemu"],
                 summary="Start the VM (pending changes are applied first)")
    def vm_start(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                 parameters: dict[str, str] = Depends(body_parameters),
                 _principal: Principal = Depends(writer)) -> JSONResponse:
        check_vm(node, vmid)
        _only(parameters, ())
        result = lifecycle.start(settings, vmid, accel=accel)
        return data(None, result={"pid": result.pid, "syntax": result.syntax,
                                  "accel": result.accel, "warnings": list(result.warnings)})

    @router.post("/nodes/{node}/qemu/{vmid}/status/stop", tags=["qemu"],
                 openapi_extra=_form_body({"timeout": "Seconds to wait before killing QEMU (0-3600)"}),
                 summary="Stop the VM: QEMU is asked to quit, killed after timeout seconds")
    def vm_stop(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                parameters: dict[str, str] = Depends(body_parameters),
                _principal: Principal = Depends(writer)) -> JSONResponse:
        check_vm(node, vmid)
        _only(parameters, ("timeout",))
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
    def vm_cache(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                 _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        properties = schema_of("scsi0").properties
        options = {key: {"type": properties[key].kind.value, "minimum": properties[key].minimum,
                         "maximum": properties[key].maximum, "unit": QCOW2_OPTION_UNITS[key],
                         "description": properties[key].description}
                   for key in QCOW2_CACHE_KEYS}
        return data({"options": options, "disks": operations.disk_cache_plans(settings, vmid)})

    @router.post("/nodes/{node}/qemu/{vmid}/qcow2-cache/preview", tags=["qdisk"],
                 openapi_extra=_form_body({"disk": "The drive key (scsi0, virtio1, ...)",
                                           "drive": "The drive string being edited"},
                                          required=("disk", "drive")),
                 summary="For a drive string being edited (disk, drive): its problems per "
                         "property, or the coverage and memory per layer it would give")
    async def vm_cache_preview(node: str = _node_parameter(), vmid: int = _vmid_parameter(),
                         parameters: dict[str, str] = Depends(body_parameters),
                         _principal: Principal = Depends(reader)) -> JSONResponse:
        check_vm(node, vmid)
        _only(parameters, ("disk", "drive"))
        missing = {name: MISSING_PARAMETER for name in ("disk", "drive") if name not in parameters}
        if missing:
            raise parameter_error(missing)
        if not is_drive_key(parameters["disk"]):
            raise parameter_error({"disk": f"'{parameters['disk']}' is not a drive key"})
        return data(operations.preview_drive(settings, parameters["disk"], parameters["drive"]))

    # -- storages --

    @router.get("/nodes/{node}/storage", tags=["storage"], summary="The storages and their space")
    def storage_list(node: str = _node_parameter(), _principal: Principal = Depends(reader)) -> JSONResponse:
        check_node(node)
        return data(operations.storage_status(settings))

    @router.get("/nodes/{node}/storage/{storage}/content", tags=["storage"],
                summary="The volumes of a storage (content and vmid filter)")
    def storage_volumes(node: str = _node_parameter(),
                        storage_id: str = Path(description="The storage id.", alias="storage"),
                        content: str | None = Query(None, description="images or iso"),
                        vmid: int | None = Query(None, description="Only this VM's volumes."),
                        _principal: Principal = Depends(reader)) -> JSONResponse:
        check_node(node)
        try:
            volumes = operations.storage_content(settings, storage_id, content=content, vmid=vmid)
        except storage.StorageError as error:
            raise parameter_error({"storage": str(error)}) from None
        return data(volumes)

    # -- the OpenAPI document and the page --

    @router.get("/version", tags=["nodes"], summary="qdisk's version")
    async def version(_principal: Principal = Depends(reader)) -> JSONResponse:
        return data({"version": __version__, "release": __version__, "product": "qdisk"})

    app.include_router(router)

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document(_principal: Principal = Depends(reader)) -> JSONResponse:
        return JSONResponse(_openapi(app))

    static = resources.files("qdisk.web") / "static"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(packages=[("qdisk.web", "static")]), name="static")
    _install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    return app


def _form_body(properties: Mapping[str, str], *, required: Sequence[str] = (),
               additional: str | None = None) -> dict[str, Any]:
    """The OpenAPI request body of parameters sent form-encoded or as JSON (string values)."""
    schema: dict[str, Any] = {"type": "object", "required": list(required),
                              "properties": {name: {"type": "string", "description": text}
                                             for name, text in properties.items()}}
    if additional is not None:
        schema["additionalProperties"] = {"type": "string", "description": additional}
    return {"requestBody": {"required": bool(required), "content": {
        "application/x-www-form-urlencoded": {"schema": schema},
        "application/json": {"schema": schema}}}}


def _node_parameter() -> Any:
    return Path(description="The node: this host's name.")


def _vmid_parameter() -> Any:
    return Path(description="The VM id (100 to 999999999).")


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

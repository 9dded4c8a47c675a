"""HTTP in Proxmox VE's dialect: answers (``{"data": ...}``, 400 with ``errors`` per
parameter), parameters from the query string and a form-encoded or JSON body, every error
turned into an answer, and the security headers of every answer."""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qdisk.errors import InvalidInputError, InvalidOptionsError, QdiskError
from qdisk.outcome import ChangeError
from qdisk.pve.access.callers import LoginRefusedError
from qdisk.vm.errors import StaleDigestError
from qdisk.web.auth import AuthError

log = logging.getLogger(__name__)

# A config change is a few KiB and a few dozen keys at most; anything far larger is refused.
MAX_BODY_BYTES = 256 * 1024
MAX_PARAMETERS = 1000
# Proxmox VE's messages for parameters it does not know, or misses.
UNKNOWN_PARAMETER = "property is not defined in schema and the schema does not allow additional properties"
MISSING_PARAMETER = "property is missing and it is not optional"


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
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ApiError(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
    except ClientDisconnect:  # gone, or closed for sending its body too slowly
        raise ApiError(400, "the request body did not arrive") from None
    return bytes(body)


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                         max_num_fields=MAX_PARAMETERS)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, f"the form-encoded body cannot be read (not UTF-8 key=value pairs, "
                            f"or more than {MAX_PARAMETERS})") from None


class _Members(list[tuple[str, Any]]):
    """A JSON object's members in order, a repeated name kept (a dict keeps only the last)."""


def _json_object(body: bytes) -> list[tuple[str, str]]:
    try:
        value = json.loads(body, object_pairs_hook=_Members)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "the JSON body cannot be read") from None
    if not isinstance(value, _Members) or len(value) > MAX_PARAMETERS:
        raise ApiError(400, f"the JSON body must be an object of at most {MAX_PARAMETERS} parameters")
    return [(name, _text(name, item)) for name, item in value if item is not None]


async def read_parameters(request: Request) -> dict[str, str]:
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


def only(parameters: Mapping[str, str], allowed: Sequence[str]) -> None:
    unknown = {name: UNKNOWN_PARAMETER for name in parameters if name not in allowed}
    if unknown:
        raise parameter_error(unknown)


def problems_by_key(error: InvalidOptionsError) -> dict[str, str]:
    """The problems of an InvalidOptionsError as Proxmox VE's per-parameter errors, each
    line kept whole under the key it concerns."""
    errors: dict[str, list[str]] = {}
    for key, line in error.keyed:
        errors.setdefault(key, []).append(line)
    return {key: "\n".join(lines) for key, lines in errors.items()}


# --- the OpenAPI document's parameters ---------------------------------------------------


def form_body(properties: Mapping[str, str], *, required: Sequence[str] = (),
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


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return _error_response(error.status, error.message, error.errors)

    async def auth_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AuthError)
        return _error_response(error.status, error.message)

    async def login_refused(_request: Request, error: Exception) -> JSONResponse:
        # Raised past authentication too: user.cfg became unreadable while checking a privilege.
        return _error_response(401, str(error))

    async def validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        errors = {str(item["loc"][-1]): _validation_message(item) for item in error.errors()}
        return _error_response(400, "Parameter verification failed.", errors)

    async def invalid_options(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, InvalidOptionsError)
        return _error_response(400, "Parameter verification failed.",
                               problems_by_key(error))

    async def stale_digest(_request: Request, error: Exception) -> JSONResponse:
        return _error_response(400, str(error), {"digest": str(error)})

    async def qdisk_error(_request: Request, error: Exception) -> JSONResponse:
        # The client's fault (invalid input, a refusal) is a 400, every other failure a 500.
        status = 400 if isinstance(error, InvalidInputError) else 500
        if isinstance(error, ChangeError):
            return _error_response(status, error.headline, error.reasons)
        return _error_response(status, str(error))

    async def http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        return _error_response(error.status_code, str(error.detail))

    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error_response(500, f"the server failed: {type(error).__name__}: {error}")

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
        (ApiError, api_error), (AuthError, auth_error), (LoginRefusedError, login_refused),
        (RequestValidationError, validation_error),
        (InvalidOptionsError, invalid_options), (StaleDigestError, stale_digest),
        (QdiskError, qdisk_error),
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

"""The page's login, as Proxmox VE's ``/access/ticket``: a token opens a session (a cookie
and a CSRF token), which can be asked about and ended."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from qdisk.web.auth import COOKIE_NAME, SESSION_LIFETIME
from qdisk.web.context import LoginParameters, Reader, State
from qdisk.web.http import MISSING_PARAMETER, data, form_body, only, parameter_error

router = APIRouter(tags=["access"])


@router.post("/access/ticket",
             openapi_extra=form_body({"token": "USER@REALM!NAME=SECRET"}, required=("token",)),
             summary="Log in with an API token (the page): a session cookie and a CSRF token")
async def login(state: State, parameters: LoginParameters) -> JSONResponse:
    only(parameters, ("token",))
    if "token" not in parameters:
        raise parameter_error({"token": MISSING_PARAMETER})
    session_id, session, read_only = state.authenticator.login(parameters["token"])
    response = data({"username": session.token_id, "CSRFPreventionToken": session.csrf,
                     "read-only": read_only})
    response.set_cookie(COOKIE_NAME, session_id, max_age=SESSION_LIFETIME, path="/",
                        httponly=True, secure=state.secure_cookies, samesite="strict")
    return response


@router.get("/access/ticket", summary="Who is logged in, and the session's CSRF token")
async def session_info(principal: Reader) -> JSONResponse:
    return data({"username": principal.token_id, "CSRFPreventionToken": principal.csrf,
                 "read-only": principal.read_only})


@router.delete("/access/ticket", summary="Log out (end the session)")
async def logout(state: State, principal: Reader) -> JSONResponse:
    if principal.session_id is not None:
        state.authenticator.logout(principal.session_id)
    response = data(None)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, secure=state.secure_cookies,
                           samesite="strict")
    return response

"""The page's login, as Proxmox VE's ``/access/ticket``: a token opens a session (a cookie
and a CSRF token), which can be asked about and ended. On a Proxmox VE host (``--pve``)
only the question is served: who the ticket or token is, and a CSRF token for the page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from qdisk.pve.access.tickets import TICKET_LIFETIME
from qdisk.web.auth import COOKIE_NAME
from qdisk.web.context import LoginParameters, Reader, State
from qdisk.web.http import MISSING_PARAMETER, ApiError, data, form_body, only, parameter_error

router = APIRouter(tags=["access"])


def _home_only(state: State) -> None:
    """On a Proxmox VE host the login is Proxmox VE's own: its cookie is the node's, and a
    logout here would end the user's session in Proxmox VE's interface too."""
    if state.pve is not None:
        raise ApiError(501, "not served on a Proxmox VE host (qdisk serve --pve), which takes "
                            "Proxmox VE's logins: log in and out in Proxmox VE's interface "
                            "(https://<this node>:8006); API clients send a ticket or an API token")


@router.post("/access/ticket",
             openapi_extra=form_body({"token": "USER@REALM!NAME=SECRET"}, required=("token",)),
             summary="Log in with an API token (the page): a session cookie and a CSRF token")
async def login(state: State, parameters: LoginParameters) -> JSONResponse:
    _home_only(state)
    only(parameters, ("token",))
    if "token" not in parameters:
        raise parameter_error({"token": MISSING_PARAMETER})
    session_id, session, read_only = state.authenticator.login(parameters["token"])
    response = data({"username": session.token_id, "CSRFPreventionToken": session.csrf,
                     "read-only": read_only})
    response.set_cookie(COOKIE_NAME, session_id, max_age=TICKET_LIFETIME, path="/",
                        httponly=True, secure=state.secure_cookies, samesite="strict")
    return response


@router.get("/access/ticket", summary="Who is logged in, and the session's CSRF token")
async def session_info(principal: Reader) -> JSONResponse:
    return data({"username": principal.token_id, "CSRFPreventionToken": principal.csrf,
                 "read-only": principal.read_only})


@router.delete("/access/ticket", summary="Log out (end the session)")
async def logout(state: State, principal: Reader) -> JSONResponse:
    _home_only(state)
    if principal.session_id is not None:
        state.authenticator.logout(principal.session_id)
    response = data(None)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, secure=state.secure_cookies,
                           samesite="strict")
    return response

"""Who asks in ``qdisk serve --pve``: Proxmox VE's own logins, never qdisk's tokens.

- A login ticket: the browser's ``PVEAuthCookie`` cookie (cookies are per host, so a
  browser logged in to the node's Proxmox VE interface on port 8006 sends it here too),
  or ``Authorization: PVEAuthCookie=TICKET``. Anything but a read also needs the
  ``CSRFPreventionToken`` header; the page gets a valid one from ``GET /access/ticket``,
  as pveproxy's index page embeds one.
- An API token: ``Authorization: PVEAPIToken=USER@REALM!ID=SECRET`` (no CSRF token).

The checks are :mod:`qdisk.pve.access`'s, on the node's files, read again when they
change. qdisk never sees a password: without a ticket, the page sends the user to log
in to Proxmox VE.
"""

from __future__ import annotations

from urllib.parse import unquote

from qdisk.pve.access.callers import API_TOKEN_PREFIX, AccessFiles, Caller, LoginRefusedError
from qdisk.web.auth import SAFE_METHODS, AuthError, Principal

TICKET_AUTHORIZATION_PREFIX = "PVEAuthCookie="
NO_TICKET = "No ticket: log in to Proxmox VE first (https://<this node>:8006)"


def _caller(access: AccessFiles, authorization: str | None, cookie: str | None) -> Caller:
    if authorization is not None:
        if authorization.startswith(API_TOKEN_PREFIX):
            return access.caller_from_api_token(authorization[len(API_TOKEN_PREFIX):])
        if authorization.startswith(TICKET_AUTHORIZATION_PREFIX):
            return access.caller_from_ticket(unquote(authorization[len(TICKET_AUTHORIZATION_PREFIX):]))
        raise AuthError(401, f"unsupported Authorization header: expected {API_TOKEN_PREFIX}"
                             f"USER@REALM!ID=SECRET or {TICKET_AUTHORIZATION_PREFIX}TICKET")
    if not cookie:
        raise AuthError(401, NO_TICKET)
    # Proxmox VE's interface stores the ticket URI-escaped.
    return access.caller_from_ticket(unquote(cookie))


def authenticate(access: AccessFiles, method: str, authorization: str | None,
                 cookie: str | None, csrf: str | None) -> Principal:
    """The Proxmox VE user or API token a request comes from, as pveproxy decides it (401
    otherwise, in its words). ``Principal.token_id`` is that user or token id; what it
    may do is its privileges' business (:meth:`AccessFiles.require`), never read-only."""
    try:
        caller = _caller(access, authorization, cookie)
        if method not in SAFE_METHODS:
            access.check_csrf(caller, csrf)
    except LoginRefusedError as error:
        raise AuthError(401, str(error)) from None
    return Principal(caller.id, read_only=False, csrf=access.csrf_token(caller))

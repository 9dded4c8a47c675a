"""Who a request comes from: an API token in the ``Authorization`` header (API clients), or
the page's session cookie, which a login with a token opens.

A session is a random id in an HttpOnly cookie (``PVEAuthCookie``, as Proxmox VE names
its ticket) with a CSRF token the page must send back in a ``CSRFPreventionToken``
header on every request that is not a read. Sessions live in the server's memory: a
restart logs the page out. A session is bound to the very token it was opened with (its
secret's digest): it ends when it expires or when that token is removed or re-created
under the same name, and it can never do more than its token. Each token keeps at most
:data:`MAX_SESSIONS_PER_TOKEN` sessions, so no token's logins can end another's.

A token file that cannot be read is logged (naming the file and what is wrong) and every
token is refused with 401 until it is repaired: the server goes on serving.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qdisk.pve.access.callers import API_TOKEN_PREFIX
from qdisk.pve.access.tickets import TICKET_LIFETIME
from qdisk.web.tokens import (
    ApiToken,
    TokenFileError,
    TokenStore,
    parse_token_line,
)

log = logging.getLogger(__name__)

COOKIE_NAME = "PVEAuthCookie"
CSRF_HEADER = "CSRFPreventionToken"
# A token's logins beyond this drop its oldest sessions: repeated logins cannot grow
# memory, and cannot log out the users of other tokens.
MAX_SESSIONS_PER_TOKEN = 32
# Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthError(Exception):
    """The request is refused: ``status`` is 401 (who?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Session:
    token_id: str
    token_sha256: str  # the token it was opened with, not a later namesake
    csrf: str
    expires: float


@dataclass(frozen=True)
class Principal:
    """An authenticated request: the token it acts as, and its session if it came from
    the page."""

    token_id: str
    read_only: bool
    session_id: str | None = None
    csrf: str | None = None

    def require_write(self) -> None:
        if self.read_only:
            raise AuthError(403, f"Permission check failed: token '{self.token_id}' is read-only")


class Authenticator:
    """Checks tokens against the token file and keeps the page's sessions."""

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._reported: str | None = None

    def login(self, token_line: str) -> tuple[str, Session, bool]:
        """Open a session for a valid token line ``USER@REALM!NAME=SECRET``: (session id,
        session, whether the token is read-only)."""
        token = self._verified(token_line)
        session_id = secrets.token_urlsafe(32)
        session = Session(token.token_id, token.sha256, secrets.token_urlsafe(32),
                          time.time() + TICKET_LIFETIME)
        with self._lock:
            self._drop_expired()
            own = sorted((item.expires, key) for key, item in self._sessions.items()
                         if item.token_id == token.token_id)
            for _, key in own[:max(0, len(own) - MAX_SESSIONS_PER_TOKEN + 1)]:
                del self._sessions[key]
            self._sessions[session_id] = session
        return session_id, session, token.read_only

    def _verified(self, token_line: str) -> ApiToken:
        parsed = parse_token_line(token_line)
        token = None if parsed is None else self._tokens(self.tokens.verify, *parsed)
        if token is None:
            raise AuthError(401, "authentication failure: unknown token or wrong secret")
        return token

    def _tokens(self, query: Callable[..., ApiToken | None], *arguments: str) -> ApiToken | None:
        """``query(*arguments)`` on the token file; a damaged file refuses every token."""
        try:
            return query(*arguments)
        except TokenFileError as error:
            if str(error) != self._reported:  # once per problem, not per request
                self._reported = str(error)
                log.error("%s: every API token is refused until it is repaired", error)
            raise AuthError(401, "authentication failure: the server cannot read its API "
                                 "tokens (see its log)") from None

    def logout(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _drop_expired(self) -> None:
        now = time.time()
        for key in [key for key, session in self._sessions.items() if session.expires <= now]:
            del self._sessions[key]

    def authenticate(self, method: str, authorization: str | None, cookie: str | None,
                     csrf: str | None) -> Principal:
        """The principal of a request, from its Authorization header, else its session
        cookie (and, for a method that may change something, its CSRF token)."""
        if authorization is not None:
            return self._by_token(authorization)
        if cookie is None:
            raise AuthError(401, "authentication required: send an API token "
                                 f"(Authorization: {API_TOKEN_PREFIX}USER@REALM!NAME=SECRET) "
                                 "or log in")
        with self._lock:
            session = self._sessions.get(cookie)
        if session is None or session.expires <= time.time():
            raise AuthError(401, "the session has expired or is unknown: log in again")
        token = self._tokens(self.tokens.lookup, session.token_id)
        if token is None or not hmac.compare_digest(token.sha256, session.token_sha256):
            with self._lock:
                self._sessions.pop(cookie, None)
            raise AuthError(401, f"token '{session.token_id}' no longer exists: log in again")
        if method not in SAFE_METHODS and not hmac.compare_digest(
                (csrf or "").encode(), session.csrf.encode()):
            raise AuthError(401, f"Permission denied - invalid CSRF token (send the "
                                 f"{CSRF_HEADER} header the login returned)")
        return Principal(token.token_id, token.read_only, cookie, session.csrf)

    def _by_token(self, authorization: str) -> Principal:
        if not authorization.startswith(API_TOKEN_PREFIX):
            raise AuthError(401, f"unsupported Authorization header: expected "
                                 f"{API_TOKEN_PREFIX}USER@REALM!NAME=SECRET")
        token = self._verified(authorization[len(API_TOKEN_PREFIX):])
        return Principal(token.token_id, token.read_only)

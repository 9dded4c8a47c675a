"""Who a request comes from: an API token in the ``Authorization`` header (API clients), or
the page's session cookie, which a login with a token opens.

A session is a random id in an HttpOnly cookie (``PVEAuthCookie``, as Proxmox VE names
its ticket) with a CSRF token the page must send back in a ``CSRFPreventionToken``
header on every request that is not a read. Sessions live in the server's memory: a
restart logs the page out. A session ends when it expires or when its token is removed,
and it can never do more than its token.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from qdisk.web.tokens import AUTHORIZATION_PREFIX, TokenStore, parse_token_line

COOKIE_NAME = "PVEAuthCookie"
CSRF_HEADER = "CSRFPreventionToken"
# Proxmox VE's ticket lifetime.
SESSION_LIFETIME = 2 * 3600
# Logins beyond this drop the oldest sessions: repeated logins cannot grow memory.
MAX_SESSIONS = 1024
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

    def login(self, token_line: str) -> tuple[str, Session, bool]:
        """Open a session for a valid token line ``USER@REALM!NAME=SECRET``: (session id,
        session, whether the token is read-only)."""
        parsed = parse_token_line(token_line)
        token = None if parsed is None else self.tokens.verify(*parsed)
        if token is None:
            raise AuthError(401, "authentication failure: unknown token or wrong secret")
        session_id = secrets.token_urlsafe(32)
        session = Session(token.token_id, secrets.token_urlsafe(32), time.time() + SESSION_LIFETIME)
        with self._lock:
            self._drop_expired()
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda key: self._sessions[key].expires)
                del self._sessions[oldest]
            self._sessions[session_id] = session
        return session_id, session, token.read_only

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
                                 f"(Authorization: {AUTHORIZATION_PREFIX}USER@REALM!NAME=SECRET) "
                                 "or log in")
        with self._lock:
            session = self._sessions.get(cookie)
        if session is None or session.expires <= time.time():
            raise AuthError(401, "the session has expired or is unknown: log in again")
        token = self.tokens.lookup(session.token_id)
        if token is None:
            raise AuthError(401, f"token '{session.token_id}' no longer exists: log in again")
        if method not in SAFE_METHODS and not hmac.compare_digest(
                (csrf or "").encode(), session.csrf.encode()):
            raise AuthError(401, f"Permission denied - invalid CSRF token (send the "
                                 f"{CSRF_HEADER} header the login returned)")
        return Principal(token.token_id, token.read_only, cookie, session.csrf)

    def _by_token(self, authorization: str) -> Principal:
        if not authorization.startswith(AUTHORIZATION_PREFIX):
            raise AuthError(401, f"unsupported Authorization header: expected "
                                 f"{AUTHORIZATION_PREFIX}USER@REALM!NAME=SECRET")
        parsed = parse_token_line(authorization[len(AUTHORIZATION_PREFIX):])
        token = None if parsed is None else self.tokens.verify(*parsed)
        if token is None:
            raise AuthError(401, "authentication failure: unknown token or wrong secret")
        return Principal(token.token_id, token.read_only)

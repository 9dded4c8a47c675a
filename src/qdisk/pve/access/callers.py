"""Who is asking, and what they may do, from the node's own files (pmxcfs).

A request comes with a login ticket (the browser's ``PVEAuthCookie``; writes also carry
a CSRF prevention token) or an API token (``PVEAPIToken=USER@REALM!ID=SECRET``). Both
are checked as pveproxy checks them: the ticket's signature and age, the token's secret
in ``priv/token.cfg``; the user (and the token) must exist in ``user.cfg``, be enabled
and not expired. :class:`AccessFiles` reads ``user.cfg``, ``token.cfg`` and the keys
again whenever they change (pmxcfs replicates an edit made on any node), so a server
never needs a restart to honour a new ACL or a disabled user.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from qdisk.errors import InvalidInputError
from qdisk.pve.access.evaluation import privileges
from qdisk.pve.access.tickets import AuthKey, load_authkey, make_csrf_token, verify_csrf_token, verify_ticket
from qdisk.pve.access.usercfg import (
    TokenSecrets,
    UserConfig,
    parse_token_cfg,
    parse_user_cfg,
    split_tokenid,
)
from qdisk.system.layout import PveLayout

API_TOKEN_PREFIX = "PVEAPIToken="
# A file changed within this many seconds may change again without its mtime moving
# (pmxcfs keeps whole seconds): it is read again on every use until it is older.
_RACY_SECONDS = 2.0

T = TypeVar("T")
log = logging.getLogger(__name__)


def split_token_value(value: str) -> tuple[str, str] | None:
    """``USER@REALM!ID=SECRET`` (what follows ``PVEAPIToken=``) -> (token id, secret), split
    at the last ``=`` as pve-access-control's verify_token; None unless it is a token id."""
    tokenid, separator, secret = value.strip().rpartition("=")
    return (tokenid, secret) if separator and split_tokenid(tokenid) is not None else None


class LoginRefusedError(InvalidInputError):
    """No valid ticket or API token (HTTP 401), in Proxmox VE's words."""


class PermissionCheckError(InvalidInputError):
    """The caller lacks a privilege on a path (HTTP 403): "Permission check failed
    (/vms/100, VM.Config.Disk)"."""

    def __init__(self, path: str, privilege: str) -> None:
        super().__init__(f"Permission check failed ({path}, {privilege})")
        self.path = path
        self.privilege = privilege


class UnreadableAccessFileError(LoginRefusedError):
    """An access file exists but cannot be read: every caller is refused (HTTP 401) until
    it can be, as Proxmox VE errors out; names the file."""


@dataclass(frozen=True)
class Caller:
    """A user (``user@realm``) or an API token (``user@realm!id``) that proved who it is;
    ``by_ticket``: logged in through a ticket, so its writes need a CSRF token."""

    id: str
    by_ticket: bool


class _WatchedFile(Generic[T]):
    """A file's parsed content, parsed again when its bytes or mtime change; ``parse``
    gets None for a missing file. A file that exists but cannot be read is never taken for
    a missing or empty one (a missing ``user.cfg`` means root@pam enabled):
    :class:`UnreadableAccessFileError` until it can be read, logged once per outage."""

    def __init__(self, path: Path, parse: Callable[[bytes | None, float], T]) -> None:
        self.path = path
        self._parse = parse
        # What was read last: the file's identity and times, its bytes, their parse.
        self._loaded: tuple[tuple[int, int, int, int] | None, bytes | None, T] | None = None
        self._unreadable = False

    def get(self) -> T:
        stat: os.stat_result | None
        key: tuple[int, int, int, int] | None
        data: bytes | None
        try:
            stat = os.stat(self.path)
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            racy = time.time() - stat.st_mtime < _RACY_SECONDS
            if self._loaded is not None and self._loaded[0] == key and not racy and not self._unreadable:
                return self._loaded[2]
            data = self.path.read_bytes()
        except FileNotFoundError:
            stat = key = data = None
        except OSError as error:
            message = (f"cannot read {self.path}: {error.strerror or error}; every login is "
                       "refused until it can be read")
            if not self._unreadable:
                log.error("%s", message)
                self._unreadable = True
            raise UnreadableAccessFileError(message) from None
        self._unreadable = False
        if self._loaded is None or self._loaded[:2] != (key, data):
            self._loaded = (key, data, self._parse(data, 0.0 if stat is None else stat.st_mtime))
        return self._loaded[2]


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", errors="replace")


class AccessFiles:
    """The node's users, tokens and keys (under ``paths``), each read again when it changes."""

    def __init__(self, paths: PveLayout) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._user_cfg = _WatchedFile(paths.user_cfg, lambda data, _: parse_user_cfg(_text(data)))
        self._token_cfg = _WatchedFile(paths.token_cfg, lambda data, _: parse_token_cfg(_text(data)))
        self._authkey = _WatchedFile(paths.authkey_pub, self._key)
        self._authkey_old = _WatchedFile(paths.authkey_pub_old, self._key)
        self._www_key = _WatchedFile(paths.www_key, lambda data, _: data)

    @staticmethod
    def _key(data: bytes | None, mtime: float) -> AuthKey | None:
        return None if data is None else load_authkey(data, mtime)

    def user_config(self) -> UserConfig:
        with self._lock:
            return self._user_cfg.get()

    def token_secrets(self) -> TokenSecrets:
        with self._lock:
            return self._token_cfg.get()

    def _check_user(self, config: UserConfig, userid: str, now: float) -> None:
        """As ``check_user_enabled``: the user exists, is enabled and has not expired."""
        user = config.users.get(userid)
        if user is None or not user.enable:
            raise LoginRefusedError(f"user '{userid}' is disabled")
        if user.expire and user.expire < now:
            raise LoginRefusedError(f"user '{userid}' access expired")

    def caller_from_ticket(self, ticket: str, now: float | None = None) -> Caller:
        now = time.time() if now is None else now
        with self._lock:
            current, previous = self._authkey.get(), self._authkey_old.get()
        userid = verify_ticket(ticket, current, previous, now)
        if userid is None:
            raise LoginRefusedError("permission denied - invalid PVE ticket")
        self._check_user(self.user_config(), userid, now)
        return Caller(userid, by_ticket=True)

    def caller_from_api_token(self, value: str, now: float | None = None) -> Caller:
        """``value``: ``USER@REALM!ID=SECRET`` (the Authorization header after
        ``PVEAPIToken=``)."""
        now = time.time() if now is None else now
        split = split_token_value(value)
        parsed = None if split is None else split_tokenid(split[0])
        if split is None or parsed is None:
            raise LoginRefusedError("no tokenid specified")
        tokenid, secret = split
        config = self.user_config()
        self._check_user(config, parsed[0], now)
        token = config.token(tokenid)
        if token is None:
            raise LoginRefusedError(f"no such token '{parsed[1]}' for user '{parsed[0]}'")
        if token.expire and token.expire < now:
            raise LoginRefusedError(f"token '{parsed[1]}' access expired")
        stored = self.token_secrets().secrets.get(tokenid)
        if stored is None or not hmac.compare_digest(stored.encode(), secret.encode()):
            raise LoginRefusedError("invalid token value!")
        return Caller(tokenid, by_ticket=False)

    def check_csrf(self, caller: Caller, token: str | None, now: float | None = None) -> None:
        """A write made with a ticket needs a CSRF prevention token of the same user."""
        if not caller.by_ticket:
            return
        now = time.time() if now is None else now
        with self._lock:
            www_key = self._www_key.get()
        if token is None or www_key is None or not verify_csrf_token(www_key, caller.id, token, now):
            raise LoginRefusedError("Permission denied - invalid csrf token")

    def csrf_token(self, caller: Caller, now: float | None = None) -> str | None:
        """A CSRF prevention token for a ticket's user (None for an API token, or without
        ``pve-www.key``)."""
        with self._lock:
            www_key = self._www_key.get()
        if not caller.by_ticket or www_key is None:
            return None
        return make_csrf_token(www_key, caller.id, time.time() if now is None else now)

    def privileges(self, who: str, path: str) -> frozenset[str]:
        """The privileges of user or token ``who`` on ``path`` (see :mod:`.evaluation`)."""
        return privileges(self.user_config(), who, path)

    def allows(self, who: str, path: str, privilege: str) -> bool:
        return privilege in self.privileges(who, path)

    def require(self, who: str, path: str, privilege: str) -> None:
        if not self.allows(who, path, privilege):
            raise PermissionCheckError(path, privilege)

"""API tokens as Proxmox VE writes them: ``USER@REALM!TOKENID=SECRET``.

A client sends ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``. The secret is
a random UUID, as Proxmox VE makes it, shown once when the token is created; only its
SHA-256 is kept, in ``QDISK_HOME/priv/tokens.json`` (mode 0600, written atomically under
a lock)::

    {"root@pam!web": {"sha256": "9f86d0...", "read-only": false, "created": 1767225600}}

A plain hash is enough: the secret has 122 random bits, so there is nothing to guess
and no dictionary to slow down (a slow hash would only slow every request).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdisk.errors import InvalidInputError, QdiskError
from qdisk.pve.access.callers import split_token_value
from qdisk.pve.access.usercfg import ROOT_USER, is_userid, split_tokenid
from qdisk.settings import Settings
from qdisk.system.fileio import atomic_write, locked, private_dir

_SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
# qdisk's own bound on the name of a token it makes (Proxmox VE's rule sets none we know of).
MAX_TOKEN_NAME_LENGTH = 64


class TokenError(InvalidInputError):
    """A token name is invalid, taken or unknown; names the token."""


class TokenFileError(QdiskError):
    """The token file cannot be read; names the file."""


@dataclass(frozen=True)
class ApiToken:
    """A token as stored: ``root@pam!web``, whether it may only read, when it was made,
    and the digest of its secret (which tells one token from a re-created namesake)."""

    token_id: str
    read_only: bool
    created: int
    sha256: str = field(repr=False, compare=False)


def token_file(settings: Settings) -> Path:
    return settings.home / "priv" / "tokens.json"


def _lock_file(settings: Settings) -> Path:
    return settings.home / "priv" / "tokens.lock"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """The token table of ``path`` (none if it does not exist); anything else than the
    table this module writes is a TokenFileError naming the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise TokenFileError(f"{path}: cannot read the API tokens: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise TokenFileError(f"{path}: the API token file is damaged (not UTF-8 text: "
                             f"byte {error.start})") from None
    try:
        entries = json.loads(text)
    except ValueError as error:
        raise TokenFileError(f"{path}: the API token file is damaged (not JSON: {error})") from None
    if not isinstance(entries, dict):
        raise TokenFileError(f"{path}: the API token file is damaged (not a table of tokens)")
    for token_id, entry in entries.items():
        problem = _entry_problem(entry)
        if problem is not None:
            raise TokenFileError(f"{path}: the API token file is damaged (token "
                                 f"{json.dumps(token_id)}: {problem})")
    return entries


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    if not isinstance(entry.get("sha256"), str) or not _SHA256_RE.fullmatch(entry["sha256"]):
        return "'sha256' is not a SHA-256 digest"
    if not isinstance(entry.get("read-only", False), bool):
        return "'read-only' is not true or false"
    created = entry.get("created", 0)
    if isinstance(created, bool) or not isinstance(created, int):
        return "'created' is not a time in seconds"
    return None


def _token(token_id: str, entry: dict[str, Any]) -> ApiToken:
    return ApiToken(token_id, entry.get("read-only") is True, int(entry.get("created", 0)),
                    entry["sha256"])


def token_id_of(name: str, user: str = ROOT_USER) -> str:
    """``root@pam!NAME``; a name or user Proxmox VE would refuse is refused."""
    if not is_userid(user):
        raise TokenError(f"user '{user}': not a user id of the form NAME@REALM (at most 64 "
                         "characters, no blank, ':' or '/')")
    token_id = f"{user}!{name}"
    if len(name) > MAX_TOKEN_NAME_LENGTH or split_tokenid(token_id) != (user, name):
        raise TokenError(f"token name '{name}': must start with a letter and contain only "
                         f"letters, digits, '.', '-' and '_' (2 to {MAX_TOKEN_NAME_LENGTH} "
                         "characters)")
    return token_id


def create(settings: Settings, name: str, *, user: str = ROOT_USER,
           read_only: bool = False) -> str:
    """Make token ``USER!NAME`` and return it whole, ``USER@REALM!NAME=SECRET``: the only
    time the secret is seen."""
    token_id = token_id_of(name, user)
    secret = str(uuid.uuid4())
    path = token_file(settings)
    private_dir(path.parent, home=settings.home)  # 0700 whatever the umask, as every command
    with locked(_lock_file(settings), home=settings.home):
        entries = _read(path)
        if token_id in entries:
            raise TokenError(f"token '{token_id}' already exists (remove it first)")
        entries[token_id] = {"sha256": _digest(secret), "read-only": read_only,
                             "created": int(time.time())}
        # atomic_write's temporary file is created 0600 (mkstemp), and the rename keeps it.
        atomic_write(path, json.dumps(entries, indent=2, sort_keys=True) + "\n", home=settings.home)
    return f"{token_id}={secret}"


def remove(settings: Settings, name: str, *, user: str = ROOT_USER) -> None:
    token_id = token_id_of(name, user)
    path = token_file(settings)
    with locked(_lock_file(settings), home=settings.home):
        entries = _read(path)
        if entries.pop(token_id, None) is None:
            raise TokenError(f"token '{token_id}' does not exist")
        atomic_write(path, json.dumps(entries, indent=2, sort_keys=True) + "\n", home=settings.home)


def list_tokens(settings: Settings) -> list[ApiToken]:
    return [_token(token_id, entry) for token_id, entry in sorted(_read(token_file(settings)).items())]


def parse_token_line(text: str) -> tuple[str, str] | None:
    """``(token id, secret)`` of ``USER@REALM!TOKENID=SECRET``; None for anything else."""
    return split_token_value(text)


class TokenStore:
    """Checks secrets against the token file, re-read only when the file changes (every
    request is checked: a removed token stops working at once)."""

    def __init__(self, settings: Settings) -> None:
        self.path = token_file(settings)
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}

    def _current(self) -> dict[str, dict[str, Any]]:
        try:
            status = os.stat(self.path)
            stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            return {}
        if stamp != self._stamp:
            self._entries, self._stamp = _read(self.path), stamp
        return self._entries

    def verify(self, token_id: str, secret: str) -> ApiToken | None:
        """The token if ``secret`` is its secret, else None."""
        entry = self._current().get(token_id)
        if entry is None or not hmac.compare_digest(str(entry.get("sha256", "")),
                                                    _digest(secret)):
            return None
        return _token(token_id, entry)

    def lookup(self, token_id: str) -> ApiToken | None:
        """The token, if it still exists (a session ends when its token is removed)."""
        entry = self._current().get(token_id)
        return None if entry is None else _token(token_id, entry)

"""``user.cfg`` and ``priv/token.cfg`` as pve-access-control parses them.

``user.cfg`` is one entry per line, fields separated by ``:``, each field trimmed; lists
are comma-separated. The file is read in one pass, in order, as Proxmox VE reads it: an
ACL may only name roles and API tokens defined above it (Proxmox VE writes users and
their tokens, groups, pools, roles, then ACLs). An unknown line or an invalid entry is
warned about and skipped, never fatal; the warnings are kept with the result.

Flags follow Perl's truth: a field is false when it is empty or ``0``, true otherwise
(so a ``token:`` line without its privsep field is not privilege-separated, as in
Proxmox VE; Proxmox VE itself always writes the field).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from qdisk.config.propstring import split_list
from qdisk.pve.access.privileges import BUILTIN_ROLES, VALID_PRIVILEGES

ROOT_USER = "root@pam"
# pve-access-control's pve-userid (PVE::Auth::Plugin's user_regex@realm_regex, at most 64
# characters) and pve-tokenid (USERID!NAME, a token's name following the realm's rule).
# ASCII: Perl matches \s on user.cfg's bytes.
MAX_USERID_LENGTH = 64
_REALM = r"[A-Za-z][A-Za-z0-9.\-_]+"
_USER = rf"[^\s:/]+@{_REALM}"
USERID_RE = re.compile(_USER, re.ASCII)
TOKENID_RE = re.compile(rf"(?P<user>{_USER})!(?P<token>{_REALM})", re.ASCII)
_NAME_RE = re.compile(r"[A-Za-z0-9.\-_]+")
# Nested pools (Proxmox VE 8.1 on): up to three levels, parent/child/grandchild.
_POOL_RE = re.compile(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}")
_STORAGE_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE)
_PATH_CHARS_RE = re.compile(r"[A-Za-z0-9.\-_/]+")
_TOKEN_CFG_LINE_RE = re.compile(r"(\S+)\s+(\S+)")
_VMID_RE = re.compile(r"[0-9]+")


def is_userid(text: str) -> bool:
    return len(text) <= MAX_USERID_LENGTH and USERID_RE.fullmatch(text) is not None


def split_tokenid(text: str) -> tuple[str, str] | None:
    """``user@realm!name`` -> (``user@realm``, ``name``); None unless it is a token id."""
    match = TOKENID_RE.fullmatch(text)
    return None if match is None else (match["user"], match["token"])


def normalize_path(text: str) -> str | None:
    """An ACL path as Proxmox VE normalizes it (``vms//100/`` -> ``/vms/100``); None when
    it is empty or has a character an ACL path cannot have."""
    if not text:
        return None
    path = re.sub(r"/+", "/", "/" + text).rstrip("/") or "/"
    return path if _PATH_CHARS_RE.fullmatch(path) else None


def _perl_true(text: str | None) -> bool:
    return text not in (None, "", "0")


@dataclass(frozen=True)
class Token:
    """An API token of a user: ``expire`` 0 never expires (else a Unix time)."""

    tokenid: str
    expire: int
    privsep: bool


@dataclass(frozen=True)
class User:
    userid: str
    enable: bool
    expire: int
    tokens: Mapping[str, Token] = field(default_factory=dict)


@dataclass(frozen=True)
class Pool:
    poolid: str
    vms: frozenset[int]
    storages: frozenset[str]


@dataclass(frozen=True)
class PathAcl:
    """The ACL entries of one path: per user, group and token, its roles and whether each
    propagates."""

    users: Mapping[str, Mapping[str, bool]]
    groups: Mapping[str, Mapping[str, bool]]
    tokens: Mapping[str, Mapping[str, bool]]


@dataclass(frozen=True)
class UserConfig:
    """``user.cfg``: ``roles`` holds the built-in roles too; ``acl`` is keyed by normalized
    path; ``warnings`` are the entries skipped, each naming its line."""

    users: Mapping[str, User]
    groups: Mapping[str, frozenset[str]]
    roles: Mapping[str, frozenset[str]]
    acl: Mapping[str, PathAcl]
    pools: Mapping[str, Pool]
    warnings: tuple[str, ...] = ()

    @cached_property
    def _pools_by_member(self) -> Mapping[str, tuple[str, ...]]:
        members: dict[str, list[str]] = {}
        for pool in self.pools.values():
            for path in [*(f"/vms/{vmid}" for vmid in pool.vms),
                         *(f"/storage/{storage}" for storage in pool.storages)]:
                members.setdefault(path, []).append(pool.poolid)
        return {path: tuple(pools) for path, pools in members.items()}

    def pools_with_member(self, path: str) -> tuple[str, ...]:
        """The pools whose member ``path`` (``/vms/<vmid>``, ``/storage/<id>``) is."""
        return self._pools_by_member.get(path, ())

    def groups_of(self, userid: str) -> frozenset[str]:
        return frozenset(group for group, members in self.groups.items() if userid in members)

    def token(self, tokenid: str) -> Token | None:
        parsed = split_tokenid(tokenid)
        if parsed is None:
            return None
        user = self.users.get(parsed[0])
        return None if user is None else user.tokens.get(parsed[1])


class _Parser:
    def __init__(self) -> None:
        self.users: dict[str, tuple[bool, int]] = {}
        self.tokens: dict[str, dict[str, Token]] = {}
        self.groups: dict[str, set[str]] = {}
        self.roles: dict[str, frozenset[str]] = dict(BUILTIN_ROLES)
        self.acl: dict[str, dict[str, dict[str, dict[str, bool]]]] = {}
        self.pools: dict[str, tuple[set[int], set[str]]] = {}
        self.pool_of_vm: dict[int, str] = {}
        self.warnings: list[str] = []
        self.line = 0

    def warn(self, message: str) -> None:
        self.warnings.append(f"user.cfg line {self.line}: {message}")

    def parse(self, text: str) -> UserConfig:
        for self.line, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if not line:
                continue
            # Perl's split drops trailing empty fields; a missing field reads as empty.
            kind, *fields = [part.strip() for part in line.split(":")]
            handler = {"user": self.user, "group": self.group, "role": self.role,
                       "acl": self.acl_entry, "pool": self.pool, "token": self.token}.get(kind)
            if handler is None:
                self.warn(f"ignored: unknown entry '{kind}'")
                continue
            handler(fields + [""] * 4)
        # As Proxmox VE's defaults: root@pam exists (and is enabled) unless the file says otherwise.
        self.users.setdefault(ROOT_USER, (True, 0))
        users = {userid: User(userid, enable, expire, self.tokens.get(userid, {}))
                 for userid, (enable, expire) in self.users.items()}
        return UserConfig(
            users=users,
            groups={name: frozenset(members) for name, members in self.groups.items()},
            roles=self.roles,
            acl={path: PathAcl(entries["users"], entries["groups"], entries["tokens"])
                 for path, entries in self.acl.items()},
            pools={name: Pool(name, frozenset(vms), frozenset(storages))
                   for name, (vms, storages) in self.pools.items()},
            warnings=tuple(self.warnings))

    @staticmethod
    def expire(text: str) -> int | None:
        return 0 if not text else int(text) if _VMID_RE.fullmatch(text) else None

    def user(self, fields: list[str]) -> None:
        userid, enable, expire_text = fields[0], fields[1], fields[2]
        expire = self.expire(expire_text)
        if not is_userid(userid):
            self.warn(f"ignored user '{userid}': not a user id (user@realm)")
        elif expire is None:
            self.warn(f"ignored user '{userid}': expire '{expire_text}' is not a Unix time")
        else:
            self.users[userid] = (_perl_true(enable), expire)

    def token(self, fields: list[str]) -> None:
        tokenid, expire_text, privsep = fields[0], fields[1], fields[2]
        parsed = split_tokenid(tokenid)
        expire = self.expire(expire_text)
        if parsed is None:
            self.warn(f"ignored token '{tokenid}': not a token id (user@realm!name)")
        elif expire is None:
            self.warn(f"ignored token '{tokenid}': expire '{expire_text}' is not a Unix time")
        elif parsed[0] not in self.users:
            self.warn(f"ignored token '{tokenid}': user '{parsed[0]}' does not exist")
        else:
            self.tokens.setdefault(parsed[0], {})[parsed[1]] = Token(tokenid, expire,
                                                                      _perl_true(privsep))

    def group(self, fields: list[str]) -> None:
        name, members = fields[0], fields[1]
        if not _NAME_RE.fullmatch(name):
            self.warn(f"ignored group '{name}': invalid characters in the name")
            return
        group = self.groups.setdefault(name, set())
        for member in split_list(members):
            if is_userid(member):
                group.add(member)
            else:
                self.warn(f"ignored member '{member}' of group '{name}': not a user id")

    def role(self, fields: list[str]) -> None:
        name, privileges = fields[0], fields[1]
        if not _NAME_RE.fullmatch(name):
            self.warn(f"ignored role '{name}': invalid characters in the name")
            return
        if name in BUILTIN_ROLES:
            self.warn(f"ignored role '{name}': a built-in role cannot be redefined")
            return
        valid = set(self.roles.get(name, ()))
        for privilege in split_list(privileges):
            if privilege in VALID_PRIVILEGES:
                valid.add(privilege)
            else:
                self.warn(f"ignored privilege '{privilege}' of role '{name}': no such privilege")
        self.roles[name] = frozenset(valid)

    def acl_entry(self, fields: list[str]) -> None:
        propagate, path_text, members, roles = _perl_true(fields[0]), fields[1], fields[2], fields[3]
        path = normalize_path(path_text)
        if path is None:
            self.warn(f"ignored ACL: invalid path '{path_text}'")
            return
        for role in split_list(roles):
            if role not in self.roles:
                self.warn(f"ignored role '{role}' in the ACL of {path}: no such role")
                continue
            for member in split_list(members):
                kind = self.acl_member_kind(member, path)
                if kind is not None:
                    name = member[1:] if kind == "groups" else member
                    entries = self.acl.setdefault(path, {"users": {}, "groups": {}, "tokens": {}})
                    entries[kind].setdefault(name, {})[role] = propagate

    def acl_member_kind(self, member: str, path: str) -> str | None:
        """Where an ACL member goes (users, groups, tokens), as Proxmox VE tells them apart;
        a group or user not defined is kept (with a warning), a token must exist."""
        if member.startswith("@") and _NAME_RE.fullmatch(member[1:]):
            if member[1:] not in self.groups:
                self.warn(f"ACL of {path}: group '{member[1:]}' does not exist")
            return "groups"
        if is_userid(member):
            if member not in self.users:
                self.warn(f"ACL of {path}: user '{member}' does not exist")
            return "users"
        parsed = split_tokenid(member)
        if parsed is not None and parsed[1] in self.tokens.get(parsed[0], {}):
            return "tokens"
        self.warn(f"ignored '{member}' in the ACL of {path}: no such user, group or token")
        return None

    def pool(self, fields: list[str]) -> None:
        name, vms, storages = fields[0], fields[2], fields[3]
        if not _POOL_RE.fullmatch(name):
            self.warn(f"ignored pool '{name}': invalid characters in the name")
            return
        members, stores = self.pools.setdefault(name, (set(), set()))
        for vmid_text in split_list(vms):
            if not _VMID_RE.fullmatch(vmid_text):
                self.warn(f"ignored VM '{vmid_text}' of pool '{name}': not a VM id")
                continue
            vmid = int(vmid_text)
            if vmid in self.pool_of_vm:
                self.warn(f"ignored VM {vmid} of pool '{name}': already in pool "
                          f"'{self.pool_of_vm[vmid]}'")
                continue
            members.add(vmid)
            self.pool_of_vm[vmid] = name
        for storage in split_list(storages):
            if _STORAGE_RE.fullmatch(storage):
                stores.add(storage)
            else:
                self.warn(f"ignored storage '{storage}' of pool '{name}': not a storage id")


def parse_user_cfg(text: str) -> UserConfig:
    return _Parser().parse(text)


@dataclass(frozen=True)
class TokenSecrets:
    """``priv/token.cfg``: token id -> secret; ``warnings`` name the lines skipped."""

    secrets: Mapping[str, str]
    warnings: tuple[str, ...] = ()


def parse_token_cfg(text: str) -> TokenSecrets:
    secrets: dict[str, str] = {}
    warnings = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        match = _TOKEN_CFG_LINE_RE.fullmatch(raw.strip())
        if match is None:
            warnings.append(f"token.cfg line {number}: ignored: not 'TOKENID SECRET'")
            continue
        secrets[match[1]] = match[2]
    return TokenSecrets(secrets, tuple(warnings))

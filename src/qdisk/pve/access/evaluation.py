"""The privileges of a user or API token on a path, as Proxmox VE computes them
(``PVE::AccessControl::roles`` and ``PVE::RPCEnvironment::permissions``).

- ``root@pam`` has every privilege everywhere.
- The path is walked from ``/`` down (``/``, ``/vms``, ``/vms/100``). At each level the
  entries that apply are those that propagate or are on the path itself, and they
  replace everything collected above: a user's own entries, else the union of its
  groups'; a privilege-separated token's own entries only.
- ``NoAccess`` among the result leaves ``NoAccess`` alone.
- Pools: the roles on ``/pool/<pool>`` also apply to ``/vms/<vmid>`` and
  ``/storage/<id>`` of its members, beside the path's own (a ``NoAccess`` of the path
  stays; a pool's ``NoAccess`` replaces the path's roles).
- A privilege-separated token has the privileges both it and its user have; any other
  token has its user's.
"""

from __future__ import annotations

from collections.abc import Mapping

from qdisk.errors import InvalidInputError
from qdisk.pve.access.privileges import ADMINISTRATOR, NO_ACCESS
from qdisk.pve.access.usercfg import (
    ROOT_USER,
    PathAcl,
    UserConfig,
    is_userid,
    normalize_path,
    split_tokenid,
)

# The paths `pveum user permissions` shows besides those of the ACLs and pool members.
TOP_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


def _levels(path: str) -> list[str]:
    """``/vms/100`` -> ``/``, ``/vms``, ``/vms/100``."""
    parts = [part for part in path.split("/") if part]
    return ["/"] + ["/" + "/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]


def _applying(entries: Mapping[str, bool], final: bool) -> dict[str, bool]:
    return {role: propagate for role, propagate in entries.items() if final or propagate}


def _level_roles(who: str, acl: PathAcl, final: bool, groups: frozenset[str]) -> dict[str, bool]:
    if split_tokenid(who) is not None:
        return _applying(acl.tokens.get(who, {}), final)
    own = _applying(acl.users.get(who, {}), final)
    if own:
        return own
    from_groups: dict[str, bool] = {}
    for group in sorted(groups & acl.groups.keys()):
        from_groups.update(_applying(acl.groups[group], final))
    return from_groups


def acl_roles(config: UserConfig, who: str, path: str) -> dict[str, bool]:
    """The roles ``who`` (a user id, or the id of a privilege-separated token) has on
    ``path`` from the ACLs alone, each with whether it propagates (pools not counted)."""
    groups = frozenset() if split_tokenid(who) is not None else config.groups_of(who)
    levels = _levels(path)
    roles: dict[str, bool] = {}
    for level in levels:
        acl = config.acl.get(level)
        if acl is None:
            continue
        found = _level_roles(who, acl, level == levels[-1], groups)
        if found:
            roles = found
    if NO_ACCESS in roles:
        return {NO_ACCESS: roles[NO_ACCESS]}
    return roles


def _pool_roles(config: UserConfig, who: str, path: str) -> set[str]:
    """The roles ``who`` has on the pool(s) ``path`` (a VM or storage) is a member of."""
    roles: set[str] = set()
    for pool in config.pools_with_member(path):
        roles.update(acl_roles(config, who, f"/pool/{pool}"))
    return roles


def _own_privileges(config: UserConfig, who: str, path: str) -> frozenset[str]:
    roles = set(acl_roles(config, who, path))
    pool_roles = _pool_roles(config, who, path)
    if pool_roles and NO_ACCESS not in roles:
        roles = {NO_ACCESS} if NO_ACCESS in pool_roles else roles | pool_roles
    return frozenset(privilege for role in roles for privilege in config.roles.get(role, ()))


def privileges(config: UserConfig, who: str, path: str) -> frozenset[str]:
    """The privileges of ``who`` (``user@realm`` or ``user@realm!token``) on ``path``;
    none for a token that does not exist. ``path`` is normalized as an ACL path."""
    normalized = normalize_path(path) or path
    if who == ROOT_USER:
        return config.roles[ADMINISTRATOR]
    parsed = split_tokenid(who)
    if parsed is None:
        return _own_privileges(config, who, normalized)
    token = config.token(who)
    if token is None:
        return frozenset()
    user_privileges = privileges(config, parsed[0], normalized)
    if not token.privsep:
        return user_privileges
    return _own_privileges(config, who, normalized) & user_privileges


def effective_privileges(config: UserConfig, who: str) -> dict[str, frozenset[str]]:
    """Per path, the privileges of ``who`` wherever it has some: the top paths, every path
    of the ACL tree (with the levels above an ACL's path) and every pool member's."""
    paths = set(TOP_PATHS)
    for path in config.acl:
        paths.update(_levels(path))
    for pool in config.pools.values():
        paths.update(f"/vms/{vmid}" for vmid in pool.vms)
        paths.update(f"/storage/{storage}" for storage in pool.storages)
    result = {path: privileges(config, who, path) for path in sorted(paths)}
    return {path: found for path, found in result.items() if found}


class UnknownCallerError(InvalidInputError):
    """A user or API token that ``user.cfg`` does not define."""


def check_exists(config: UserConfig, who: str) -> None:
    """Refuse a user id or token id that ``user.cfg`` does not define, in Proxmox VE's words."""
    parsed = split_tokenid(who)
    if parsed is None:
        if not is_userid(who):
            raise UnknownCallerError(f"'{who}' is neither a user id (user@realm) nor a token id "
                                     "(user@realm!token)")
        if who not in config.users:
            raise UnknownCallerError(f"user '{who}' does not exist")
    elif parsed[0] not in config.users:
        raise UnknownCallerError(f"user '{parsed[0]}' does not exist")
    elif config.token(who) is None:
        raise UnknownCallerError(f"no such token '{parsed[1]}' for user '{parsed[0]}'")

"""The privileges Proxmox VE gives, rule by rule, from one user.cfg with groups, pools,
custom roles and privilege-separated tokens: through `qdisk pve permissions` (what an
administrator runs) and the evaluation itself (what the server asks)."""

from __future__ import annotations

import json

import pytest

from qdisk.pve.access.evaluation import effective_privileges, privileges
from qdisk.pve.access.privileges import BUILTIN_ROLES, VALID_PRIVILEGES
from qdisk.pve.access.usercfg import UserConfig, parse_user_cfg

from access_helpers import AccessTree
from cli_helpers import RunQdisk

USER_CFG = """\
user:root@pam:1:0:::root@example.com:::
user:alice@pve:1:0:Alice:::::
token:alice@pve!sep:0:1::
token:alice@pve!full:0:0::
token:alice@pve!bare:0:1::
user:bob@pve:1:0:::::
user:carol@pve:1:0:::::
user:dave@pve:1:0:::::
user:erin@pve:1:0:::::
user:frank@pve:0:0:::::

group:staff:alice@pve,dave@pve::
group:ops:dave@pve,erin@pve::
group:ghosts:nobody@pve,not-a-user::

pool:customers::200,201:local:
pool:customers/gold::202::
pool:dup::200::

role:DiskTuner:VM.Audit,VM.Config.Disk,VM.Monitor:
role:PVEAuditor:VM.Config.Disk:

acl:1:/:carol@pve:PVEAuditor:
acl:1:/vms:alice@pve:PVEVMUser:
acl:0:/vms:bob@pve:DiskTuner:
acl:1:/vms/100:carol@pve:DiskTuner:
acl:1:/nodes/pve1:carol@pve:PVESysAdmin:
acl:1:/vms:@staff:PVEVMAdmin:
acl:1:/vms:@ops:DiskTuner:
acl:1:/vms/101:dave@pve:NoAccess,PVEVMAdmin:
acl:1:/pool/customers:erin@pve:PVEVMAdmin:
acl:1:/vms/201:erin@pve:NoAccess:
acl:1:/pool/customers/gold:erin@pve:NoAccess:
acl:1:/vms:alice@pve!sep:DiskTuner:
acl:1:/vms:frank@pve:PVEVMAdmin:
acl:1:/vms:alice@pve!ghost:PVEAdmin:
acl:1:/storage:@nogroup:PVEAuditor:
acl:1:/vms:bob@pve:LaterRole:
bogus:line
role:LaterRole:VM.Audit:
"""

VM_USER = BUILTIN_ROLES["PVEVMUser"]
VM_ADMIN = BUILTIN_ROLES["PVEVMAdmin"]
AUDITOR = BUILTIN_ROLES["PVEAuditor"]
DISK_TUNER = frozenset({"VM.Audit", "VM.Config.Disk"})


@pytest.fixture
def config() -> UserConfig:
    return parse_user_cfg(USER_CFG)


@pytest.fixture
def cli(access: AccessTree, monkeypatch: pytest.MonkeyPatch, run_qdisk: RunQdisk) -> RunQdisk:
    access.user_cfg(USER_CFG)
    monkeypatch.setenv("QDISK_PVE_ROOT", str(access.root))
    monkeypatch.setenv("QDISK_PVE_NODE", "pve1")
    return run_qdisk


def test_the_builtin_roles_are_proxmox_ve_9s() -> None:
    assert VM_USER == {"VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
                       "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt",
                       "VM.GuestAgent.FileWrite", "VM.PowerMgmt", "VM.Audit", "VM.GuestAgent.Audit"}
    assert VM_ADMIN > VM_USER and "VM.Config.Disk" in VM_ADMIN
    assert AUDITOR == {"VM.Audit", "VM.GuestAgent.Audit", "Sys.Audit", "Datastore.Audit", "SDN.Audit",
                       "Pool.Audit", "Mapping.Audit"}
    assert BUILTIN_ROLES["PVESysAdmin"] == {"Sys.Console", "Sys.Syslog", "Sys.Audit"}
    assert "PVESysUser" not in BUILTIN_ROLES and "PVEUserUser" not in BUILTIN_ROLES
    assert BUILTIN_ROLES["PVEPoolUser"] == {"Pool.Audit"}
    assert BUILTIN_ROLES["PVETemplateUser"] == {"VM.Clone", "VM.Audit"}
    admin = BUILTIN_ROLES["PVEAdmin"]
    # PVEAdmin: every group's admin, user and audit privileges, but no root ones, no
    # Permissions.Modify, and no Mapping.Modify.
    assert not admin & {"Sys.Modify", "Sys.PowerMgmt", "Realm.Allocate", "Permissions.Modify",
                        "Mapping.Modify"}
    assert {"Sys.Console", "User.Modify", "Mapping.Use", "SDN.Allocate", "Pool.Allocate"} <= admin
    assert BUILTIN_ROLES["Administrator"] == VALID_PRIVILEGES and "Permissions.Modify" in VALID_PRIVILEGES
    assert BUILTIN_ROLES["NoAccess"] == frozenset()


def test_invalid_entries_are_warned_about_and_skipped(config: UserConfig) -> None:
    warnings = "\n".join(config.warnings)
    for expected in ("line 14: ignored member 'not-a-user' of group 'ghosts'",
                     "line 18: ignored VM 200 of pool 'dup': already in pool 'customers'",
                     "line 20: ignored privilege 'VM.Monitor' of role 'DiskTuner'",
                     "line 21: ignored role 'PVEAuditor': a built-in role cannot be redefined",
                     "line 36: ignored 'alice@pve!ghost' in the ACL of /vms",
                     "line 37: ACL of /storage: group 'nogroup' does not exist",
                     "line 38: ignored role 'LaterRole' in the ACL of /vms: no such role",
                     "line 39: ignored: unknown entry 'bogus'"):
        assert expected in warnings
    assert config.roles["DiskTuner"] == DISK_TUNER
    assert config.roles["PVEAuditor"] == AUDITOR


@pytest.mark.parametrize(("who", "path", "expected"), [
    # root@pam: everything, everywhere.
    ("root@pam", "/vms/100", VALID_PRIVILEGES),
    # Propagation: a propagating entry reaches below; one that does not stays on its path.
    ("alice@pve", "/vms/100", VM_USER),
    ("bob@pve", "/vms", DISK_TUNER),
    ("bob@pve", "/vms/100", frozenset()),
    ("alice@pve", "/", frozenset()),
    # A deeper level replaces a shallower one, for any role.
    ("carol@pve", "/", AUDITOR),
    ("carol@pve", "/vms/102", AUDITOR),
    ("carol@pve", "/vms/100", DISK_TUNER),
    ("carol@pve", "/nodes/pve1", BUILTIN_ROLES["PVESysAdmin"]),
    ("carol@pve", "//nodes//pve1/", BUILTIN_ROLES["PVESysAdmin"]),
    # The user's own entries win over its groups' on the same level (alice is in staff) ...
    ("alice@pve", "/vms/102", VM_USER),
    # ... else its groups' together.
    ("dave@pve", "/vms/102", VM_ADMIN | DISK_TUNER),
    # NoAccess leaves nothing, whatever comes with it.
    ("dave@pve", "/vms/101", frozenset()),
    # Pools: the pool's roles join the path's own ...
    ("erin@pve", "/vms/200", VM_ADMIN | DISK_TUNER),
    ("erin@pve", "/storage/local", VM_ADMIN),
    ("erin@pve", "/vms/203", DISK_TUNER),
    # ... the path's NoAccess is not overridden by a pool ...
    ("erin@pve", "/vms/201", frozenset()),
    # ... and a pool's NoAccess (a nested pool's own ACL) replaces the path's roles.
    ("erin@pve", "/vms/202", frozenset()),
    # A privilege-separated token: what both it and its user have; alice lacks
    # VM.Config.Disk, so her token cannot have it.
    ("alice@pve!sep", "/vms/100", frozenset({"VM.Audit"})),
    ("alice@pve!sep", "/", frozenset()),
    ("alice@pve!bare", "/vms/100", frozenset()),
    # A token without privilege separation: its user's.
    ("alice@pve!full", "/vms/100", VM_USER),
    # A disabled user's privileges are still what the ACLs say (logins are refused).
    ("frank@pve", "/vms/100", VM_ADMIN),
    # Tokens and users not defined have none.
    ("alice@pve!ghost", "/vms/100", frozenset()),
    ("nobody@pve", "/vms/100", frozenset()),
])
def test_privileges_on_a_path(config: UserConfig, who: str, path: str, expected: frozenset[str]) -> None:
    assert privileges(config, who, path) == expected


def test_a_role_defined_after_the_acl_that_names_it_does_not_count(config: UserConfig) -> None:
    # Proxmox VE reads user.cfg in one pass (and writes roles before ACLs).
    assert "LaterRole" in config.roles
    assert privileges(config, "bob@pve", "/vms") == DISK_TUNER


def test_every_path_with_privileges(config: UserConfig) -> None:
    assert effective_privileges(config, "bob@pve") == {"/vms": DISK_TUNER}
    carol = effective_privileges(config, "carol@pve")
    assert set(carol) == {"/", "/access", "/access/groups", "/nodes", "/nodes/pve1", "/pool",
                          "/pool/customers", "/pool/customers/gold", "/sdn", "/storage",
                          "/storage/local", "/vms", "/vms/100", "/vms/101", "/vms/200", "/vms/201",
                          "/vms/202"}
    assert carol["/vms/100"] == DISK_TUNER and carol["/vms/201"] == AUDITOR
    erin = effective_privileges(config, "erin@pve")
    assert set(erin) == {"/vms", "/vms/100", "/vms/101", "/vms/200", "/storage/local", "/pool/customers"}


def test_the_command_prints_one_paths_privileges(cli: RunQdisk) -> None:
    result = cli("pve", "permissions", "carol@pve", "--path", "/vms/100")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "VM.Audit\nVM.Config.Disk\n"
    assert "ignored privilege 'VM.Monitor'" in result.stderr
    result = cli("pve", "permissions", "alice@pve!sep", "--path", "vms/100", "--json")
    assert json.loads(result.stdout) == ["VM.Audit"]
    result = cli("pve", "permissions", "alice@pve", "--path", "/", "--json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])
    result = cli("pve", "permissions", "alice@pve", "--path", "/")
    assert (result.exit_code, result.stdout) == (0, "")
    assert "alice@pve has no privilege on /" in result.stderr


def test_the_command_prints_every_path(cli: RunQdisk) -> None:
    result = cli("pve", "permissions", "bob@pve")
    assert (result.exit_code, result.stdout) == (0, "/vms\n  VM.Audit\n  VM.Config.Disk\n")
    result = cli("pve", "permissions", "erin@pve", "--json")
    every = json.loads(result.stdout)
    assert every["/vms/200"] == sorted(VM_ADMIN) and "/vms/202" not in every
    result = cli("pve", "permissions", "frank@pve", "--path", "/vms/7")
    assert result.exit_code == 0 and "user 'frank@pve' is disabled" in result.stderr


def test_the_command_refuses_what_user_cfg_does_not_define(cli: RunQdisk) -> None:
    for who, message in (("nobody@pve", "user 'nobody@pve' does not exist"),
                         ("alice@pve!ghost", "no such token 'ghost' for user 'alice@pve'"),
                         ("nobody@pve!tok", "user 'nobody@pve' does not exist"),
                         ("alice", "'alice' is neither a user id")):
        result = cli("pve", "permissions", who)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    result = cli("pve", "permissions", "alice@pve", "--path", "/vms/1 00")
    assert result.exit_code == 2 and "not an ACL path" in result.stderr

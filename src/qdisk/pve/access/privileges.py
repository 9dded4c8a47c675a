"""Proxmox VE 9's privileges and built-in roles (pve-access-control's ``$privgroups``).

Each group has root, admin, user and audit privileges; the built-in roles are made from
them as pve-access-control makes them, so a role and its privileges are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PrivilegeGroup:
    name: str
    root: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    audit: tuple[str, ...] = ()


PRIVILEGE_GROUPS = (
    PrivilegeGroup(
        "VM",
        admin=("VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
               "VM.Config.HWType", "VM.Config.Options", "VM.Allocate", "VM.Clone",
               "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.Replicate", "VM.Snapshot",
               "VM.Snapshot.Rollback"),
        user=("VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
              "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite",
              "VM.PowerMgmt"),
        audit=("VM.Audit", "VM.GuestAgent.Audit")),
    PrivilegeGroup(
        "Sys",
        root=("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        admin=("Sys.Console", "Sys.Syslog"),
        audit=("Sys.Audit",)),
    PrivilegeGroup(
        "Datastore",
        admin=("Datastore.Allocate", "Datastore.AllocateTemplate"),
        user=("Datastore.AllocateSpace",),
        audit=("Datastore.Audit",)),
    PrivilegeGroup(
        "SDN",
        admin=("SDN.Allocate", "SDN.Audit"),
        user=("SDN.Use",),
        audit=("SDN.Audit",)),
    PrivilegeGroup(
        "User",
        root=("Realm.Allocate",),
        admin=("User.Modify", "Group.Allocate", "Realm.AllocateUser")),
    PrivilegeGroup(
        "Pool",
        admin=("Pool.Allocate",),
        user=("Pool.Audit",),
        audit=("Pool.Audit",)),
    PrivilegeGroup(
        "Mapping",
        admin=("Mapping.Modify",),
        user=("Mapping.Use",),
        audit=("Mapping.Audit",)),
)
# Privileges outside every group.
UNGROUPED_PRIVILEGES = ("Permissions.Modify",)

NO_ACCESS = "NoAccess"
ADMINISTRATOR = "Administrator"
# The privileges the qdisk page and API check (qemu-server's own checks of the same acts).
VM_AUDIT = "VM.Audit"
VM_CONFIG_DISK = "VM.Config.Disk"
SYS_AUDIT = "Sys.Audit"


def _valid_privileges() -> frozenset[str]:
    every = set(UNGROUPED_PRIVILEGES)
    for group in PRIVILEGE_GROUPS:
        every.update(group.root, group.admin, group.user, group.audit)
    return frozenset(every)


VALID_PRIVILEGES = _valid_privileges()


def _builtin_roles() -> dict[str, frozenset[str]]:
    roles: dict[str, set[str]] = {"PVEAdmin": set(), "PVEAuditor": set()}
    for group in PRIVILEGE_GROUPS:
        roles.setdefault(f"PVE{group.name}Admin", set()).update(group.admin, group.user, group.audit)
        roles["PVEAdmin"].update(group.admin, group.user, group.audit)
        if group.user:
            roles.setdefault(f"PVE{group.name}User", set()).update(group.user, group.audit)
        roles["PVEAuditor"].update(group.audit)
    # Only Administrator, root@pam and PVEMappingAdmin may modify mappings.
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles[ADMINISTRATOR] = set(VALID_PRIVILEGES)
    roles[NO_ACCESS] = set()
    return {name: frozenset(privileges) for name, privileges in roles.items()}


BUILTIN_ROLES: Mapping[str, frozenset[str]] = _builtin_roles()

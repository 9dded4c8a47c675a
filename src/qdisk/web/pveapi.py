"""The API of ``qdisk serve --pve``: the qcow2 cache of a Proxmox VE host's VMs, in
Proxmox VE's dialect (under ``/api2/json``, ``{"data": ...}``, 400 ``errors`` per
parameter).

Every endpoint calls what ``qdisk pve`` calls: the audit (:mod:`qdisk.pve.audit`), ``pve
set`` (:mod:`qdisk.pve.changes`), and the page's views of them
(:mod:`qdisk.pve.cacheview`). VM configs, storages and starting or stopping VMs stay
Proxmox VE's: nothing here writes a VM config or ``storage.cfg``. ``{node}`` is any node
of the cluster (its VMs' configs are on every node); a change reaches a running VM only
on the node it runs on, this one.

Who asks is a Proxmox VE user or API token (:mod:`qdisk.web.pveauth`), and what they may
do is what Proxmox VE grants on the same paths: ``VM.Audit`` on ``/vms/<vmid>`` to see a
VM, its disks and their caches (lists show only those), ``VM.Config.Disk`` to change a
disk's cache settings, ``Sys.Audit`` on ``/nodes/<node>`` for the node's totals; a
refusal is 403 "Permission check failed (/vms/100, VM.Config.Disk)".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from qdisk.config.drive import is_drive_key
from qdisk.config.propstring import split_list
from qdisk.pve import audit, cacheview, changes
from qdisk.pve.access.callers import AccessFiles, PermissionCheckError
from qdisk.pve.access.privileges import SYS_AUDIT, VM_AUDIT, VM_CONFIG_DISK
from qdisk.pve.cachesettings import has_cache_keys
from qdisk.pve.host import PveHost
from qdisk.web.auth import AuthError, Principal
from qdisk.web.context import Node, Parameters, Reader, State, Vmid, Writer
from qdisk.web.http import (
    MISSING_PARAMETER,
    UNKNOWN_PARAMETER,
    ApiError,
    data,
    form_body,
    only,
    parameter_error,
)

CACHE_PATH = "/nodes/{node}/qemu/{vmid}/qdisk/cache"

router = APIRouter()


async def served_host(state: State) -> PveHost:
    """The Proxmox VE host served (this router is mounted only with one)."""
    assert state.pve is not None
    return state.pve


Host = Annotated[PveHost, Depends(served_host)]


def cluster_node(host: Host, _caller: Reader, node: Node) -> str:
    """The ``{node}`` of the path: a node of the cluster. Only once the caller is known
    (whatever the order of an endpoint's parameters): an anonymous client gets its 401,
    not the list of the cluster's nodes."""
    known = host.nodes()
    if node not in known:
        raise parameter_error({"node": f"no such node '{node}' (the cluster's nodes: "
                                       f"{', '.join(known)})"})
    return node


ClusterNode = Annotated[str, Depends(cluster_node)]


async def served_access(state: State) -> AccessFiles:
    """The host's users, tokens and ACLs (this router is mounted only with a host)."""
    assert state.access is not None
    return state.access


Access = Annotated[AccessFiles, Depends(served_access)]


def require(access: AccessFiles, principal: Principal, path: str, privilege: str) -> None:
    """403 in Proxmox VE's words unless the caller has ``privilege`` on ``path``."""
    try:
        access.require(principal.token_id, path, privilege)
    except PermissionCheckError as error:
        raise AuthError(403, str(error)) from None


def _node_vm(host: PveHost, node: str, vmid: int) -> int:
    """A VM whose config is on ``node`` (404 otherwise)."""
    if not host.paths.node_vm_config(node, vmid).is_file():
        raise ApiError(404, f"VM {vmid} does not exist on node {node}")
    return vmid


# The privilege is checked before the VM is looked for, as Proxmox VE does: a caller
# without it learns nothing of which VMs exist.

def audited_vm(host: Host, access: Access, principal: Reader, node: ClusterNode, vmid: Vmid) -> int:
    """The ``{vmid}`` of the path, which the caller may see (``VM.Audit``)."""
    require(access, principal, f"/vms/{vmid}", VM_AUDIT)
    return _node_vm(host, node, vmid)


def disk_config_vm(host: Host, access: Access, principal: Writer, node: ClusterNode,
                   vmid: Vmid) -> int:
    """The ``{vmid}`` of the path, whose disks the caller may change (``VM.Config.Disk``,
    as ``qm set`` of a disk option)."""
    require(access, principal, f"/vms/{vmid}", VM_CONFIG_DISK)
    return _node_vm(host, node, vmid)


AuditedVm = Annotated[int, Depends(audited_vm)]
DiskConfigVm = Annotated[int, Depends(disk_config_vm)]

# Reads of pmxcfs, /proc and image headers, and QMP sessions: plain functions, which
# FastAPI runs in threads (a cluster file system may be slow to answer). The preview,
# sent as one types, runs in the state's CPU worker, as the home's.


@router.get("/nodes", tags=["nodes"],
            summary="The cluster's nodes, this one first (local: 1, the one qdisk runs on)")
def nodes(host: Host, _principal: Reader) -> JSONResponse:
    names = sorted(host.nodes(), key=lambda name: name != host.node)
    return data([{"node": name, "type": "node",
                  **({"status": "online", "local": 1} if name == host.node else
                     {"status": "unknown", "local": 0})} for name in names])


@router.get("/nodes/{node}/qdisk/audit", tags=["qdisk"],
            summary="Every VM and disk of the node: per image, the qcow2 cache it has now, "
                    "its coverage and memory, the auto size; per VM where its settings stand "
                    "in the cluster (the node's part of qdisk pve audit --all-nodes --json)")
def node_audit(host: Host, access: Access, principal: Reader, node: ClusterNode) -> JSONResponse:
    """Only the VMs the caller may see (``VM.Audit``); the node's totals (over every VM)
    only with ``Sys.Audit`` on the node. ``{node}`` is any node of the cluster, as in
    Proxmox VE's own API: the whole cluster is one request per node of ``/nodes``, so
    there is no ``all-nodes`` parameter."""
    def visible(vmid: int) -> bool:
        return access.allows(principal.token_id, f"/vms/{vmid}", VM_AUDIT)

    whole_node = access.allows(principal.token_id, f"/nodes/{node}", SYS_AUDIT)
    [result] = audit.audit(host, [node], visible=None if whole_node else visible, states=True)
    answer = result.as_json()
    answer["vms"] = [vm for vm in answer["vms"] if visible(vm["vmid"])]
    if not whole_node:
        del answer["memory"], answer["auto-memory"]
    return data(answer)


@router.get(CACHE_PATH, tags=["qdisk"],
            summary="The VM's stored qcow2 cache settings per drive, and per disk and image "
                    "the cache it has now, QEMU's default and the auto size")
def vm_cache(host: Host, access: Access, principal: Reader, node: ClusterNode,
             vmid: AuditedVm) -> JSONResponse:
    """``may-change``: whether the caller may change them (``VM.Config.Disk``)."""
    return data({**cacheview.vm_cache(host, node, vmid),
                 "may-change": access.allows(principal.token_id, f"/vms/{vmid}", VM_CONFIG_DISK)})


@router.put(CACHE_PATH, tags=["qdisk"],
            openapi_extra=form_body({"delete": "Drives whose settings to remove, a list (commas)"},
                                    additional="A drive key and its qcow2 cache options, which "
                                               "replace the drive's (scsi0: "
                                               "qcow2-cache-size-based-on-disk=1)"),
            summary="Set the VM's qcow2 cache settings (qdisk pve set): checked, applied live "
                    "if it runs on this node, stored in /etc/pve/qdisk/<vmid>.conf")
def set_cache(host: Host, vmid: DiskConfigVm, parameters: Parameters) -> JSONResponse:
    requested = dict(parameters)
    deletes = split_list(requested.pop("delete", ""))
    unknown = {name: UNKNOWN_PARAMETER for name in requested if not is_drive_key(name)}
    if unknown:
        raise parameter_error(unknown)
    result = changes.set_cache(host, vmid, requested, deletes)
    not_taken = result.error()
    if not_taken is not None:
        raise not_taken
    return data(None, result={
        "stored": list(result.stored), "file": str(host.paths.cache_settings(vmid)),
        "drives": {outcome.key: {"outcome": outcome.outcome.value,
                                 "messages": list(outcome.messages)}
                   for outcome in result.outcomes},
        "notes": list(result.notes), "warnings": list(result.warnings)})


@router.post(f"{CACHE_PATH}/preview", tags=["qdisk"],
             openapi_extra=form_body({"disk": "The drive key (scsi0, virtio1, ...)",
                                      "settings": "The drive's qcow2 cache options being "
                                                  "edited (empty: none)"},
                                     required=("disk",)),
             summary="For a drive's qcow2 cache settings being edited: their problems per "
                     "property, or the coverage and memory per image they would give")
async def preview(state: State, host: Host, node: ClusterNode, vmid: AuditedVm,
                  parameters: Parameters) -> JSONResponse:
    only(parameters, ("disk", "settings"))
    if "disk" not in parameters:
        raise parameter_error({"disk": MISSING_PARAMETER})
    key = parameters["disk"]
    if not has_cache_keys(key):
        raise parameter_error({"disk": f"'{key}' is not a disk drive key (ide0-3, sata0-5, "
                                       "scsi0-30, virtio0-15)"})
    text = parameters.get("settings", "")
    return data(await state.off_the_loop(
        lambda: cacheview.preview_settings(host, node, vmid, key, text)))

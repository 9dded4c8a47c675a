"""The endpoints of QDISK_HOME's VMs (``qdisk serve``): configs, states, their qcow2 cache,
storages. Each calls what the ``qdisk vm`` commands call (:mod:`qdisk.vm`), or the views of
:mod:`qdisk.vm.cacheview` and :mod:`qdisk.storage.content`; the values are checked there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from qdisk import storage
from qdisk.config.drive import is_drive_key
from qdisk.config.propstring import parse_boolean, split_list
from qdisk.pve.access.usercfg import ROOT_USER
from qdisk.qemu.cacheview import option_descriptors
from qdisk.storage import content as storage_content
from qdisk.vm import cacheview, changes, lifecycle, store, views
from qdisk.web.auth import Principal
from qdisk.web.context import Node, Parameters, Reader, State, Vmid, Writer, checked_vmid
from qdisk.web.http import (
    MISSING_PARAMETER,
    ApiError,
    data,
    form_body,
    only,
    parameter_error,
)

MAX_STOP_TIMEOUT = 3600
ONLY_ROOT_OPTION = "Only root may use this option."

router = APIRouter()


async def this_node(state: State, node: Node) -> str:
    """The ``{node}`` of the path: this host."""
    if node != state.node:
        raise parameter_error({"node": f"no such node '{node}' (this host is '{state.node}')"})
    return node


async def existing_vm(state: State, vmid: Vmid, _node: Annotated[str, Depends(this_node)]) -> int:
    """The ``{vmid}`` of the path: a VM of this host (404 otherwise)."""
    if not store.config_path(state.settings, vmid).exists():
        raise ApiError(404, f"VM {vmid} does not exist")
    return vmid


ThisNode = Annotated[str, Depends(this_node)]
ExistingVm = Annotated[int, Depends(existing_vm)]

# Dependencies and handlers that only read a few small files (a config) are coroutines:
# FastAPI runs a plain dependency in a thread too, so each would add a hop. They run on the
# event loop. A thread hop per request, and the GIL handed between dozens of threads,
# would multiply their latency under load. The preview's checks, which grow with the
# string sent, run in the state's CPU worker (ServerState.off_the_loop). Handlers that
# wait (VM start and stop, QMP, the VM lock) are plain functions: FastAPI runs them in
# threads.


def _flag(parameters: dict[str, str], name: str) -> bool:
    """Boolean parameter ``name``, taken out of ``parameters`` (absent: false)."""
    if name not in parameters:
        return False
    value = parse_boolean(parameters.pop(name))
    if value is None:
        raise parameter_error({name: "type check ('boolean') failed"})
    return value


def _skiplock(parameters: dict[str, str], principal: Principal) -> bool:
    """``skiplock``, taken out of ``parameters``: root's override, refused to anyone else
    as qemu-server refuses it. Here only tokens log in; root@pam's stand for root (the
    home's owner), where Proxmox VE refuses even root's API tokens."""
    skiplock = _flag(parameters, "skiplock")
    if skiplock and principal.token_id.partition("!")[0] != ROOT_USER:
        raise parameter_error({"skiplock": ONLY_ROOT_OPTION})
    return skiplock


@router.get("/nodes", tags=["nodes"], summary="The node (this host)")
async def nodes(state: State, _principal: Reader) -> JSONResponse:
    return data([{"node": state.node, "status": "online", "type": "node"}])


@router.get("/nodes/{node}/qemu", tags=["qemu"], summary="Every VM: vmid, name, status")
def vm_list(state: State, _principal: Reader, _node: ThisNode) -> JSONResponse:
    # A VM whose config cannot be read is listed with its problem (and no name).
    return data([{"vmid": item.vmid, "status": item.status,
                  **({"name": item.name} if item.name is not None else {}),
                  **({"problem": item.problem} if item.problem is not None else {})}
                 for item in views.list_vms(state.settings)])


@router.get("/nodes/{node}/qemu/{vmid}/config", tags=["qemu"],
            summary="The VM's config (pending values merged, unless current=1) and its digest")
async def vm_config(state: State, _principal: Reader, vmid: ExistingVm,
                    current: bool = Query(False, description="Only the applied values.")
                    ) -> JSONResponse:
    view = views.config_view(state.settings, vmid, current=current)
    return data({**view.values, "digest": view.digest})


def update_config(state: State, principal: Writer, vmid: ExistingVm,
                  parameters: Parameters) -> JSONResponse:
    # Proxmox VE's other parameters (revert, force, ...) are no config keys: the service
    # refuses them with the unknown ones.
    requested = dict(parameters)
    digest, delete_text = requested.pop("digest", None), requested.pop("delete", "")
    skiplock = _skiplock(requested, principal)
    result = changes.set_options(state.settings, vmid, requested, split_list(delete_text),
                                 digest=digest, skiplock=skiplock)
    outcome = {"applied": list(result.applied), "pending": list(result.pending),
               "notes": list(result.notes), "warnings": list(result.warnings)}
    not_taken = result.error()
    if not_taken is not None:
        raise not_taken
    return data(None, result=outcome)


_CONFIG_BODY = form_body({"delete": "Keys to remove, a list (commas)",
                          "digest": "The digest the config was read with: refused if stale",
                          "skiplock": "Ignore a lock: line (root's override)"},
                         additional="Config keys and their values (memory, scsi0, ...)")
for _method, _summary in (
        ("PUT", "Change the VM's config: config keys, delete (a list), digest"),
        ("POST", "As PUT (Proxmox VE runs it as a task; qdisk is done when it answers)")):
    router.add_api_route("/nodes/{node}/qemu/{vmid}/config", update_config, methods=[_method],
                         name=f"update_config_{_method.lower()}", tags=["qemu"],
                         openapi_extra=_CONFIG_BODY, summary=_summary)


@router.get("/nodes/{node}/qemu/{vmid}/pending", tags=["qemu"],
            summary="Per key: the applied value, the pending value, a pending deletion")
async def vm_pending(state: State, _principal: Reader, vmid: ExistingVm) -> JSONResponse:
    return data([item.as_json() for item in views.pending_items(state.settings, vmid)])


@router.get("/nodes/{node}/qemu/{vmid}/status/current", tags=["qemu"],
            summary="Whether the VM runs; its pid, QEMU's memory and the cache applied per disk")
def vm_status(state: State, _principal: Reader, vmid: ExistingVm) -> JSONResponse:
    name = views.config_values(state.settings, vmid, current=True).get("name")
    return data({**views.status(state.settings, vmid).as_json(), "name": name})


@router.post("/nodes/{node}/qemu/{vmid}/status/start", tags=["qemu"],
             openapi_extra=form_body({"skiplock": "Ignore a lock: line (root's override)"}),
             summary="Start the VM (pending changes are applied first)")
def vm_start(state: State, principal: Writer, vmid: ExistingVm,
             parameters: Parameters) -> JSONResponse:
    only(parameters, ("skiplock",))
    result = lifecycle.start(state.settings, vmid, skiplock=_skiplock(dict(parameters), principal))
    return data(None, result={"pid": result.pid, "syntax": result.syntax,
                              "accel": result.accel, "warnings": list(result.warnings)})


@router.post("/nodes/{node}/qemu/{vmid}/status/stop", tags=["qemu"],
             openapi_extra=form_body({"timeout": "Seconds to wait before killing QEMU (0-3600)",
                                      "skiplock": "Ignore a lock: line (root's override)"}),
             summary="Stop the VM: QEMU is asked to quit, killed after timeout seconds")
def vm_stop(state: State, principal: Writer, vmid: ExistingVm,
            parameters: Parameters) -> JSONResponse:
    only(parameters, ("timeout", "skiplock"))
    skiplock = _skiplock(dict(parameters), principal)
    timeout = lifecycle.DEFAULT_STOP_TIMEOUT
    if "timeout" in parameters:
        try:
            timeout = float(parameters["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= MAX_STOP_TIMEOUT:
            raise parameter_error({"timeout": "must be a number of seconds from 0 to 3600"})
    result = lifecycle.stop(state.settings, vmid, timeout=timeout, skiplock=skiplock)
    return data(None, result={"pid": result.pid, "killed": result.killed,
                              "warnings": list(result.warnings)})


@router.get("/nodes/{node}/qemu/{vmid}/qcow2-cache", tags=["qdisk"],
            summary="The cache plan per disk and layer: auto size, default, configured, "
                    "applied; coverage and memory")
def vm_cache(state: State, _principal: Reader, vmid: ExistingVm) -> JSONResponse:
    return data({"options": option_descriptors(),
                 "disks": cacheview.disk_cache_plans(state.settings, vmid)})


@router.post("/nodes/{node}/qemu/{vmid}/qcow2-cache/preview", tags=["qdisk"],
             openapi_extra=form_body({"disk": "The drive key (scsi0, virtio1, ...)",
                                      "drive": "The drive string being edited"},
                                     required=("disk", "drive")),
             summary="For a drive string being edited (disk, drive): its problems per "
                     "property, or the coverage and memory per layer it would give")
async def vm_cache_preview(state: State, principal: Reader, _vmid: ExistingVm,
                           parameters: Parameters) -> JSONResponse:
    only(parameters, ("disk", "drive"))
    missing = {name: MISSING_PARAMETER for name in ("disk", "drive") if name not in parameters}
    if missing:
        raise parameter_error(missing)
    if not is_drive_key(parameters["disk"]):
        raise parameter_error({"disk": f"'{parameters['disk']}' is not a drive key"})
    # A read-write token is root@pam's, with root's rights; a read-only one is not.
    return data(await state.off_the_loop(lambda: cacheview.preview_drive(
        state.settings, parameters["disk"], parameters["drive"],
        host_paths=not principal.read_only)))


@router.get("/nodes/{node}/storage", tags=["storage"], summary="The storages and their space")
def storage_list(state: State, _principal: Reader, _node: ThisNode) -> JSONResponse:
    return data(storage_content.storage_status(state.settings))


@router.get("/nodes/{node}/storage/{storage}/content", tags=["storage"],
            summary="The volumes of a storage (content and vmid filter)")
def storage_volumes(state: State, _principal: Reader, _node: ThisNode,
                    storage_id: str = Path(description="The storage id.", alias="storage"),
                    content: str | None = Query(None, description="images or iso"),
                    vmid: str | None = Query(None, description="Only this VM's volumes."),
                    ) -> JSONResponse:
    only_vmid = None if vmid is None else checked_vmid(vmid)
    try:
        volumes = storage_content.storage_content(state.settings, storage_id, content=content,
                                                  vmid=only_vmid)
    except storage.StorageError as error:
        raise parameter_error({"storage": str(error)}) from None
    return data(volumes)

"""``qdisk pve set``: a VM's qcow2 cache settings checked, applied to it if it runs on
this node, and stored on pmxcfs (:mod:`qdisk.pve.cachesettings`).

Every value is checked first, as ``vm set`` checks a drive: the drive language's rules
on the drive's line in the VM config with the settings in place of its qcow2 keys, then
QEMU's rules against the image (an entry size above the cluster size, ...). Nothing is
written unless all pass. Under the VM's cluster lock, a running VM then gets each drive's
change live; what QEMU refuses is not stored (the drive keeps its settings and QEMU its
cache). The VM config and ``storage.cfg`` are never written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qdisk.cache import check_drive_cache
from qdisk.config.drive import Drive
from qdisk.config.propstring import Value
from qdisk.config.vmconfig import check_vmid
from qdisk.errors import DriveError, InvalidInputError, InvalidOptionsError
from qdisk.image.file import ImageError
from qdisk.image.info import read_image
from qdisk.outcome import ChangeError, DriveOutcome, change_error
from qdisk.pve.apply import apply_settings
from qdisk.pve.cachesettings import (
    CacheSettings,
    check_unlocked,
    cluster_lock,
    has_cache_keys,
    parse_settings_value,
    print_settings,
    read_settings,
    replace_file,
    with_settings,
)
from qdisk.pve.host import HostVm, PveHost, PveRefusedError, is_disk
from qdisk.qemu.nodes import Disk, resolve_disk
from qdisk.storage import StorageConfig


@dataclass(frozen=True)
class SetResult:
    """What ``set`` of VM ``vmid`` did: the drives whose settings changed in the file,
    what the running VM did with each change (a refused or failed one is not stored), and
    messages (``notes`` on stdout, ``warnings`` on stderr)."""

    vmid: int
    stored: tuple[str, ...] = ()
    outcomes: tuple[DriveOutcome, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def error(self) -> ChangeError | None:
        """The error for the changes the running VM did not take (see
        :func:`qdisk.outcome.change_error`)."""
        return change_error(f"VM {self.vmid}", self.outcomes,
                            consequence="the settings are not stored")


def set_cache(host: PveHost, vmid: int, changes: Mapping[str, str],
              deletes: Sequence[str] = ()) -> SetResult:
    """Set (``changes``: drive key -> options) and remove (``deletes``) VM ``vmid``'s
    settings; see the module. Raises InvalidOptionsError with every problem found."""
    check_vmid(vmid)
    if not changes and not deletes:
        raise InvalidInputError("no options specified")  # as qm set
    host.check()  # before the lock: nothing is made under a root that is no host
    problems: list[tuple[str, str]] = []
    parsed: CacheSettings = {}
    for key, text in changes.items():
        if key in deletes:
            problems.append((key, f"{key}: cannot set and delete the same drive at once"))
            continue
        try:
            parsed[key] = parse_settings_value(key, text)
        except DriveError as error:
            problems += [(key, line) for line in error.lines()]
    problems += [(key, f"{key}: not a disk drive key") for key in deletes if not has_cache_keys(key)]
    if problems:
        raise InvalidOptionsError(vmid, problems)
    with cluster_lock(host.paths.cluster_lock(f"qdisk-{vmid}")):
        vm = host.find_vm(vmid)
        check_unlocked(vmid, vm.lock)
        path = host.paths.cache_settings(vmid)
        current = read_settings(path, vmid)
        storage = host.storage_config()
        for key, values in parsed.items():
            problems += [(key, line) for line in _drive_problems(host, vm, key, values, storage)]
        if problems:
            raise InvalidOptionsError(vmid, problems)
        warnings = [f"{key}: has no qdisk settings: nothing to delete"
                    for key in deletes if key not in current]
        removed = [key for key in deletes if key in current]
        wanted = {**{key: values for key, values in current.items() if key not in removed},
                  **parsed}
        outcomes: list[DriveOutcome] = []
        notes: list[str] = []
        if host.running_pid(vmid) is not None:
            outcomes = apply_settings(host, vm, wanted, [*parsed, *removed], storage=storage)
            for outcome in outcomes:
                if outcome.not_taken:
                    _keep_as_before(wanted, current, outcome.key)
        else:
            notes.append(_where_it_applies(host, vm))
            warnings += _hookscript_warning(host, vm)
        stored = tuple(key for key in [*parsed, *removed] if wanted.get(key) != current.get(key))
        if stored:
            replace_file(path, print_settings(vmid, wanted) if wanted else None)
    return SetResult(vmid, stored, tuple(outcomes), tuple(notes), tuple(warnings))


def _keep_as_before(wanted: CacheSettings, current: CacheSettings, key: str) -> None:
    if key in current:
        wanted[key] = current[key]
    else:
        wanted.pop(key, None)


def _drive_problems(host: PveHost, vm: HostVm, key: str, values: Mapping[str, Value],
                    storage: StorageConfig) -> list[str]:
    """The problems of giving drive ``key`` these settings, checked against its image."""
    try:
        checked_drive(host, vm, key, values, storage)
    except DriveError as error:
        return error.lines()
    except InvalidInputError as error:
        # No such drive, a volume its storage cannot resolve, an image this node cannot
        # check (each message names the drive).
        return [str(error)]
    return []


def checked_drive(host: PveHost, vm: HostVm, key: str, values: Mapping[str, Value],
                  storage: StorageConfig) -> tuple[Drive, Disk]:
    """Drive ``key`` of ``vm`` with ``values`` as its qcow2 settings, and its disk: a
    qcow2 image this node reads, for which QEMU takes the settings. Raises DriveError
    (every problem of the drive language and of the image, each naming its property), or
    InvalidInputError naming the drive (one that cannot have settings, or be checked)."""
    drive = vm.drive(key)
    if not is_disk(drive):
        raise PveRefusedError(f"{key}: a CD-ROM or an empty drive has no qcow2 cache")
    drive = with_settings(drive, values)
    disk = resolve_disk(drive, storage)
    if disk.format != "qcow2" or disk.path is None:
        volume = disk.volume.volid if disk.volume else drive.file
        raise PveRefusedError(f"{key}: volume '{volume}' is {disk.format or 'empty'}: the qcow2 "
                              f"cache options apply to qcow2 images only")
    reason = host.unreadable_reason(vm, disk)
    if reason is not None:
        raise PveRefusedError(f"{key}: its image cannot be checked: {reason}")
    try:
        image = read_image(disk.path, format="qcow2", tools=host.tools)
    except ImageError as error:
        raise PveRefusedError(f"{key}: {error}") from None
    problems = check_drive_cache(drive, image)
    if problems:
        raise DriveError(key, problems)
    return drive, disk


def _where_it_applies(host: PveHost, vm: HostVm) -> str:
    if vm.node != host.node:
        if _has_agent(host, vm.node):
            # The status file says an agent ran there, not that it still runs: pmxcfs
            # shows no liveness without periodic writes, which the agent does not make.
            return (f"VM {vm.vmid} belongs to node {vm.node}: the settings apply there through "
                    f"its agent (qdisk pve agent), within a cycle if the VM and the agent run; "
                    f"else at its next start with qdisk's hookscript, or with 'qdisk pve apply "
                    f"{vm.vmid}' on {vm.node}")
        return (f"VM {vm.vmid} belongs to node {vm.node}: the settings apply there at its next "
                f"start, or now with 'qdisk pve apply {vm.vmid}' on {vm.node}")
    return f"VM {vm.vmid} is not running: the settings apply at its next start"


def _has_agent(host: PveHost, node: str) -> bool:
    """Whether an agent has run on ``node`` (its status file stays when it stops)."""
    return host.paths.node_status(node).exists()


def _hookscript_warning(host: PveHost, vm: HostVm) -> list[str]:
    hookscript = vm.config.current.values.get("hookscript")
    if (hookscript is not None and "qdisk" in hookscript) or _has_agent(host, vm.node):
        return []
    what = f"its hookscript ({hookscript}) is not qdisk's" if hookscript else "it has no hookscript"
    return [f"VM {vm.vmid}: {what}, and no qdisk agent ran on node {vm.node}: nothing applies "
            f"the settings when it starts; run the agent there (qdisk pve agent), attach "
            f"qdisk's hookscript (qdisk pve hook --print-snippet), or run 'qdisk pve apply "
            f"{vm.vmid}' after each start"]

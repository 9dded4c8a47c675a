"""`qdisk pve`: Proxmox VE host mode, on the host's own files and running VMs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

import click

from qdisk.cache import describe_options
from qdisk.cli.common import (
    KEY_VALUE_COMMAND,
    delete_keys,
    parse_key_values,
    pass_settings,
    pve_host,
    warn,
    warn_all,
)
from qdisk.errors import QdiskError
from qdisk.outcome import DriveOutcome, Outcome
from qdisk.pve import agent, apply, audit, changes, hook, nodestatus
from qdisk.pve.access.callers import AccessFiles
from qdisk.pve.access.evaluation import check_exists, effective_privileges, privileges
from qdisk.pve.access.usercfg import normalize_path
from qdisk.pve.host import PveHost, PveRefusedError
from qdisk.settings import Settings
from qdisk.units import format_bytes, parse_size


def warn_storage_cfg(host: PveHost) -> None:
    """What reading the host's storage.cfg skipped, told once per command (a storage.cfg
    that cannot be read at all is the command's own error)."""
    try:
        warn_all(host.storage_config().warnings)
    except QdiskError:
        pass


@click.group(name="pve")
def command() -> None:
    """Proxmox VE host mode: audit and tune the qcow2 caches of this host's VMs, live
    ($QDISK_PVE_ROOT: the host's root, default /; $QDISK_PVE_NODE: this node's name)."""


# --- audit --------------------------------------------------------------------------------


@command.command(name="audit")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@click.option("--node", "node", metavar="NAME", help="The VMs of node NAME (default: this node).")
@click.option("--all-nodes", is_flag=True, help="The VMs of every node.")
@click.option("--budget", metavar="SIZE",
              help="Share SIZE of memory (e.g. 16G) among each node's qcow2 disks, and print "
                   "the plan.")
@pass_settings
def audit_(settings: Settings, as_json: bool, node: str | None, all_nodes: bool,
           budget: str | None) -> None:
    """Every VM and disk: its images, the qcow2 cache each has now, what it covers and costs,
    and the automatic size. Read-only."""
    if node is not None and all_nodes:
        raise click.UsageError("--node and --all-nodes exclude each other")
    budget_bytes = None
    if budget is not None:
        budget_bytes = parse_size(budget)
        if budget_bytes is None:
            raise click.BadParameter(f"'{budget}' is not a size (e.g. 512M, 16G, 1.5T)",
                                     param_hint="--budget")
    host = pve_host(settings)
    warn_storage_cfg(host)
    nodes = host.nodes() if all_nodes else [node] if node is not None else None
    # --all-nodes: every node's agent's record says where each VM's settings stand.
    results = audit.audit(host, nodes, budget=budget_bytes, states=all_nodes)
    if as_json:
        # Compact: a host's report is large (every image of every disk).
        click.echo(json.dumps({"nodes": [result.as_json() for result in results]},
                              separators=(",", ":")))
        return
    click.echo("\n\n".join(_node_text(result) for result in results))


def _node_text(node: audit.NodeAudit) -> str:
    lines = [f"node {node.node}: {len(node.vms)} VMs"]
    for vm in node.vms:
        lines += _vm_lines(vm)
        state = node.states.get(vm.vmid)
        if state is not None and state.state != "none":
            lines.insert(len(lines) - 1, f"  settings: {_state_text(state)}")
    lines.append(f"node {node.node}: qcow2 caches {format_bytes(node.memory)} now, "
                 f"{format_bytes(node.auto_memory)} to cover every disk whole")
    if node.budget is not None:
        lines += _budget_lines(node.budget)
    return "\n".join(lines)


def _state_text(state: nodestatus.SettingsState) -> str:
    where = f" on {state.node}" if state.node else ""
    reasons = "; ".join(state.reasons)
    if state.state == "applied":
        return f"applied{where}" + (f" ({reasons})" if reasons else "")
    return f"{state.state}{where}" + (f": {reasons}" if reasons else "")


def _vm_lines(vm: audit.VmAudit) -> list[str]:
    state = "running here" if vm.running else "not running here"
    lock = f", locked ({vm.lock})" if vm.lock else ""
    lines = [f"VM {vm.vmid}{f' ({vm.name})' if vm.name else ''}: {state}{lock}"]
    if vm.problem:
        return [*lines, f"  {vm.problem}"]
    for disk in vm.disks:
        settings = f", settings {disk.settings}" if disk.settings else ""
        lines.append(f"  {disk.key}: {disk.volume}, {disk.format or '?'}{settings}, "
                     f"cache: {disk.cache_source}")
        if disk.problem:
            lines.append(f"    not read: {disk.problem}")
            continue
        if disk.settings_problem:
            lines.append(f"    its settings would be refused: {disk.settings_problem}")
        for layer in disk.layers:
            lines.append("    " + _layer_text(layer))
    lines.append(f"  VM {vm.vmid}: {format_bytes(vm.memory)} now, {format_bytes(vm.auto_memory)} "
                 "whole")
    return lines


def _layer_text(layer: audit.LayerAudit) -> str:
    image = layer.image
    head = f"{os.path.basename(image.filename)}: {image.format} {format_bytes(image.virtual_size)}"
    if layer.effective is None:
        return f"{head}, no qcow2 cache"
    return (f"{head}, clusters {format_bytes(image.cluster_size or 0)}"
            f"{', extended L2' if image.extended_l2 else ''}; {describe_options(layer.options)}: "
            f"L2 {format_bytes(layer.effective.l2_cache_size)} covers {layer.coverage:.1f}%, "
            f"{format_bytes(layer.memory)}; auto size {format_bytes(layer.auto_memory)} covers all")


def _budget_lines(plan: audit.BudgetPlan) -> list[str]:
    lines = [f"budget {format_bytes(plan.budget)}: {format_bytes(plan.memory)} planned"
             + (f", {format_bytes(plan.memory - plan.budget)} over (each disk needs at least "
                "1 MiB)" if plan.memory > plan.budget else "")]
    for entry in plan.entries:
        lines.append(f"  VM {entry.vmid} {entry.key}: {format_bytes(entry.memory)} of "
                     f"{format_bytes(entry.need)}, covers {entry.coverage:.1f}%: "
                     f"qdisk pve set {entry.vmid} --{entry.key} {entry.setting}")
    return lines


# --- set and apply ------------------------------------------------------------------------


# `set` takes arbitrary `--DRIVE OPTIONS`, as `vm set` and qm do.
@command.command(name="set", context_settings=KEY_VALUE_COMMAND)
@click.argument("vmid", type=int)
@click.option("--delete", "deletes", metavar="DRIVE,...", multiple=True,
              help="Drives whose settings to remove (comma-separated).")
@click.pass_context
def set_(ctx: click.Context, vmid: int, deletes: tuple[str, ...]) -> None:
    """Store VM VMID's qcow2 cache settings (--scsi0 qcow2-cache-size-based-on-disk=1 ...)
    in /etc/pve/qdisk/VMID.conf, and apply them at once if the VM runs on this node."""
    host = pve_host(ctx.ensure_object(Settings))
    warn_storage_cfg(host)
    result = changes.set_cache(host, vmid, parse_key_values(ctx.args), delete_keys(deletes))
    for message in result.warnings:
        warn(message)
    _report(result.outcomes)
    for message in result.notes:
        click.echo(message)
    click.echo(f"stored in {host.paths.cache_settings(vmid)}: {', '.join(result.stored)}"
               if result.stored else "the stored settings are unchanged")
    not_taken = result.error()
    if not_taken is not None:
        raise not_taken


def _report(outcomes: Sequence[DriveOutcome]) -> None:
    """Each drive's messages, but those of the changes the running VM did not take: the
    error for them lists them (:func:`qdisk.outcome.change_error`)."""
    for outcome in outcomes:
        if outcome.not_taken:
            continue
        for message in outcome.messages:
            if outcome.outcome in (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.SKIPPED):
                click.echo(message)
            else:
                warn(message)


@command.command(name="apply")
@click.argument("vmid", type=int, required=False)
@click.option("--all", "all_vms", is_flag=True, help="Every VM running on this node.")
@pass_settings
def apply_(settings: Settings, vmid: int | None, all_vms: bool) -> None:
    """Apply the stored settings to VM VMID (or --all VMs) running on this node again (after
    a snapshot operation replaced the nodes); what QEMU already has is left alone."""
    if (vmid is None) == (not all_vms):
        raise click.UsageError("give a VMID or --all")
    host = pve_host(settings)
    warn_storage_cfg(host)
    outcomes: list[DriveOutcome] = []
    for each in apply.running_vmids(host) if all_vms else [vmid]:
        assert each is not None
        try:
            applied = apply.apply_stored(host, each)
        except PveRefusedError as error:
            if not all_vms:
                raise
            warn(str(error))
            continue
        _report(applied)
        outcomes += [replace(outcome, key=f"VM {each} {outcome.key}") if all_vms else outcome
                     for outcome in applied]
    not_taken = apply.apply_error(f"node {host.node}" if all_vms else f"VM {vmid}", outcomes)
    if not_taken is not None:
        raise not_taken


# --- permissions --------------------------------------------------------------------------


@command.command(name="permissions")
@click.argument("userid")
@click.option("--path", "path_text", metavar="PATH",
              help="Only this ACL path (/vms/100, /nodes/pve1, /pool/customers, ...).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: a list of privileges (with --path), else an object PATH -> list.")
@pass_settings
def permissions_(settings: Settings, userid: str, path_text: str | None, as_json: bool) -> None:
    """What USERID (user@realm, or an API token user@realm!id) may do, from this node's
    user.cfg, as Proxmox VE computes it (pveum user permissions): with --path, its
    privileges there, sorted, one per line; else every path of the ACLs, the top paths
    and the pools' members where it has any, each with its privileges."""
    path = None if path_text is None else normalize_path(path_text)
    if path_text is not None and path is None:
        raise click.BadParameter(f"'{path_text}' is not an ACL path (/vms/100, /nodes/pve1, ...)",
                                 param_hint="--path")
    host = pve_host(settings)
    host.check()
    config = AccessFiles(host.paths).user_config()
    for message in config.warnings:
        warn(message)
    check_exists(config, userid)
    owner = config.users[userid.split("!", 1)[0]]
    if not owner.enable:
        warn(f"user '{owner.userid}' is disabled: Proxmox VE refuses its logins and tokens")
    if path is not None:
        found = sorted(privileges(config, userid, path))
        if as_json:
            click.echo(json.dumps(found))
        elif found:
            click.echo("\n".join(found))
        else:
            warn(f"{userid} has no privilege on {path}")
        return
    every = {each: sorted(found) for each, found in effective_privileges(config, userid).items()}
    if as_json:
        click.echo(json.dumps(every, indent=2))
        return
    for each, found in every.items():
        click.echo("\n".join([each, *(f"  {privilege}" for privilege in found)]))


# --- hook ---------------------------------------------------------------------------------


@command.command(name="hook")
@click.argument("vmid", required=False)
@click.argument("phase", required=False)
@click.option("--print-snippet", is_flag=True,
              help=f"Print the hookscript to install as snippets/{hook.SNIPPET_NAME}.")
@click.option("--wait-for-migration", is_flag=True, hidden=True)
@pass_settings
def hook_(settings: Settings, vmid: str | None, phase: str | None, print_snippet: bool,
          wait_for_migration: bool) -> None:
    """Hookscript entry point: VMID PHASE as Proxmox VE calls it. At post-start the VM's
    settings are applied (on a migration target once it runs); other phases do nothing.
    Never fails: a problem is reported on stderr (the task log)."""
    if print_snippet:
        click.echo(hook.snippet(_qdisk_command()), nl=False)
        return
    if vmid is None or phase is None:
        raise click.UsageError("give VMID PHASE (or --print-snippet)")
    if phase != "post-start":
        return
    try:
        host = pve_host(settings)
        if host.paths.cache_settings(int(vmid)).exists():
            warn_storage_cfg(host)  # only for the VMs qdisk has settings for
        if wait_for_migration:
            _report_hook(int(vmid), hook.wait_for_migration(host, int(vmid)))
            return
        result = hook.run_hook(host, int(vmid), phase)
        if result.waiting_pid is not None:
            click.echo(f"VM {vmid} is the target of a migration: its qcow2 cache settings are "
                       f"applied once it runs (in the background, pid {result.waiting_pid}, log "
                       f"{host.layout.run_files(int(vmid)).log})")
        _report_hook(int(vmid), result.outcomes)
    except Exception as error:  # noqa: BLE001  (a failing post-start marks the VM's start failed)
        warn(f"VM {vmid}: qcow2 cache settings not applied: {error}")


def _report_hook(vmid: int, outcomes: Sequence[DriveOutcome]) -> None:
    """The hook never fails: the changes the VM did not take are a warning."""
    _report(outcomes)
    not_taken = apply.apply_error(f"VM {vmid}", outcomes)
    if not_taken is not None:
        warn(str(not_taken))


def _qdisk_command() -> str:
    """This qdisk's absolute path (a hookscript runs with a short PATH)."""
    running = Path(sys.argv[0])
    if running.name == "qdisk" and running.exists():
        return str(running.absolute())
    return shutil.which("qdisk") or "qdisk"


# --- agent --------------------------------------------------------------------------------


@command.command(name="agent")
@click.option("--interval", type=click.FloatRange(min=0.1), default=agent.DEFAULT_INTERVAL,
              show_default=True, metavar="SECONDS", help="Time between two cycles.")
@click.option("--once", is_flag=True, help="One cycle, then exit.")
@click.option("--confirm-interval", type=click.FloatRange(min=0.1),
              default=agent.DEFAULT_CONFIRM_INTERVAL, show_default=True, metavar="SECONDS",
              help="How often the node names of a VM qdisk tuned are confirmed over QMP.")
@pass_settings
def agent_(settings: Settings, interval: float, once: bool, confirm_interval: float) -> None:
    """This node's agent: keeps every running VM's qcow2 caches as its stored settings say
    (changed on any node, a VM started or migrated here, nodes rebuilt, a disk resized).
    One line per action or problem on stdout; SIGTERM ends it."""
    host = pve_host(settings)
    node_agent = agent.Agent(host, click.echo, confirm_interval=confirm_interval)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise agent.AgentStopped(signal.Signals(signum).name)

    before = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        with agent.node_agent_lock(host):
            click.echo(f"qdisk agent on node {host.node}: a cycle every {interval:g} s, node "
                       f"names confirmed every {confirm_interval:g} s")
            agent.run(node_agent, interval=interval, once=once)
    except agent.AgentStopped as stopped:
        click.echo(f"qdisk agent on node {host.node}: stopped ({stopped})")
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)

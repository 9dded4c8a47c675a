"""`qdisk vm`: VMs in the Proxmox VE config format."""

from __future__ import annotations

import time

import click

from qdisk.cache import describe_options
from qdisk.cli.common import (
    KEY_VALUE_COMMAND,
    delete_keys,
    echo_json,
    parse_key_values,
    pass_settings,
    warn,
    with_default_storage,
)
from qdisk.settings import Settings
from qdisk.units import format_bytes
from qdisk.vm import changes, lifecycle, snapshots, views


@click.group(name="vm")
@pass_settings
def command(settings: Settings) -> None:
    """VMs: their configs, QEMU commands and lifecycle (as `qm`)."""
    with_default_storage(settings)


@command.command(name="showcmd")
@click.argument("vmid", type=int)
@click.option("--pretty", is_flag=True, help="One option per line, as `qm showcmd --pretty`.")
@click.option("--qemu-version", metavar="X.Y[.Z]",
              help="Build for this QEMU version (default: the installed qemu-system's).")
@click.option("--syntax", type=click.Choice(["blockdev", "drive"]),
              help="Force -blockdev or legacy -drive (default: by machine version, >= 10.0 "
                   "is blockdev).")
@pass_settings
def showcmd(settings: Settings, vmid: int, pretty: bool, qemu_version: str | None,
            syntax: str | None) -> None:
    """Print the QEMU command that starts VM VMID."""
    result = views.vm_command(settings, vmid, qemu_version_text=qemu_version,
                              syntax="blockdev" if syntax == "blockdev" else
                              "drive" if syntax == "drive" else None)
    for message in result.warnings:
        warn(message)
    click.echo(result.text(pretty=pretty))


# --- lifecycle and config changes ---------------------------------------------------------

def _report(result: changes.ChangeResult) -> None:
    for message in result.warnings:
        warn(message)
    for message in result.notes:
        click.echo(message)
    if result.pending:
        click.echo(f"pending until the next start: {', '.join(result.pending)}")
    error = result.error()
    if error is not None:
        raise error


@command.command(name="create", context_settings=KEY_VALUE_COMMAND)
@click.argument("vmid", type=int)
@click.pass_context
def create(ctx: click.Context, vmid: int) -> None:
    """Create VM VMID from --KEY VALUE options (drives: --scsi0 local:32,format=qcow2)."""
    settings = ctx.ensure_object(Settings)
    _report(changes.create(settings, vmid, parse_key_values(ctx.args)))


@command.command(name="set", context_settings=KEY_VALUE_COMMAND)
@click.argument("vmid", type=int)
@click.option("--delete", "deletes", metavar="KEY,...", multiple=True,
              help="Keys to remove (comma-separated).")
@click.option("--skiplock", is_flag=True,
              help="Ignore the config's lock: line (as qm's --skiplock, root's override).")
@click.pass_context
def set_(ctx: click.Context, vmid: int, deletes: tuple[str, ...], skiplock: bool) -> None:
    """Change VM VMID: --KEY VALUE ... and --delete KEY,... (a running VM takes what it can
    now, the rest at the next start)."""
    settings = ctx.ensure_object(Settings)
    _report(changes.set_options(settings, vmid, parse_key_values(ctx.args), delete_keys(deletes),
                                skiplock=skiplock))


@command.command(name="config")
@click.argument("vmid", type=int)
@click.option("--current", is_flag=True, help="Only the applied values, without pending ones.")
@click.option("--json", "as_json", is_flag=True, help="A JSON object of keys to values.")
@pass_settings
def config(settings: Settings, vmid: int, current: bool, as_json: bool) -> None:
    """Print VM VMID's config (pending changes merged in, as `qm config`)."""
    values = views.config_values(settings, vmid, current=current)
    if as_json:
        echo_json(values)
        return
    for key, value in values.items():
        click.echo(f"{key}: {value}")


@command.command(name="pending")
@click.argument("vmid", type=int)
@click.option("--json", "as_json", is_flag=True, help="As `qm pending --output-format json`.")
@pass_settings
def pending(settings: Settings, vmid: int, as_json: bool) -> None:
    """Print VM VMID's applied and pending values (cur/new/del, as `qm pending`)."""
    items = views.pending_items(settings, vmid)
    if as_json:
        echo_json([item.as_json() for item in items])
        return
    for item in items:
        if item.delete:
            click.echo(f"del {item.key}: {item.value or ''}")
            continue
        if item.value is not None:
            click.echo(f"cur {item.key}: {item.value}")
        if item.pending is not None:
            click.echo(f"new {item.key}: {item.pending}")


@command.command(name="start")
@click.argument("vmid", type=int)
@click.option("--syntax", type=click.Choice(["blockdev", "drive"]),
              help="Force -blockdev or legacy -drive (default: by machine version).")
@click.option("--skiplock", is_flag=True,
              help="Ignore the config's lock: line (as qm's --skiplock, root's override).")
@pass_settings
def start(settings: Settings, vmid: int, syntax: str | None, skiplock: bool) -> None:
    """Start VM VMID under QEMU (KVM when /dev/kvm is usable; $QDISK_ACCEL overrides)."""
    result = lifecycle.start(settings, vmid, syntax="blockdev" if syntax == "blockdev" else
                             "drive" if syntax == "drive" else None, skiplock=skiplock)
    for message in result.warnings:
        warn(message)
    for message in result.notes:
        click.echo(message)
    click.echo(f"VM {vmid} started (pid {result.pid}, {result.syntax} syntax, "
               f"accel {result.accel or 'tcg'})")


@command.command(name="stop")
@click.argument("vmid", type=int)
@click.option("--timeout", type=click.FloatRange(min=0), default=lifecycle.DEFAULT_STOP_TIMEOUT,
              show_default=True, metavar="S", help="Seconds to wait for QEMU to quit before "
                                                   "killing it.")
@click.option("--skiplock", is_flag=True,
              help="Ignore the config's lock: line (as qm's --skiplock, root's override).")
@pass_settings
def stop(settings: Settings, vmid: int, timeout: float, skiplock: bool) -> None:
    """Stop VM VMID: QEMU is asked to quit, and killed after the timeout."""
    result = lifecycle.stop(settings, vmid, timeout=timeout, skiplock=skiplock)
    for message in result.warnings:
        warn(message)
    click.echo(f"VM {vmid} stopped")


@command.command(name="status")
@click.argument("vmid", type=int)
@click.option("--json", "as_json", is_flag=True,
              help="Status, pid, QMP socket and the cache options applied to each disk.")
@pass_settings
def status(settings: Settings, vmid: int, as_json: bool) -> None:
    """Print whether VM VMID is running."""
    result = views.status(settings, vmid)
    if as_json:
        echo_json(result.as_json())
        return
    click.echo(f"status: {result.status}")
    if not result.running:
        return
    memory = result.memory()
    state = result.state
    click.echo(f"pid: {result.pid}, {state.syntax if state else '?'} syntax, QEMU address space "
               f"{format_bytes(memory.get('VmSize', 0))}, resident {format_bytes(memory.get('VmRSS', 0))}")
    for key, nodes in (state.disks if state else {}).items():
        for node in nodes:
            click.echo(f"{key}: {node.filename}: {describe_options(node.cache)}")


@command.command(name="destroy")
@click.argument("vmid", type=int)
@click.option("--skiplock", is_flag=True,
              help="Ignore the config's lock: line (as qm's --skiplock, root's override).")
@pass_settings
def destroy(settings: Settings, vmid: int, skiplock: bool) -> None:
    """Remove stopped VM VMID: its config and the disk images it owns."""
    for path in lifecycle.destroy(settings, vmid, skiplock=skiplock):
        click.echo(f"removed {path}")


@command.command(name="list")
@pass_settings
def list_(settings: Settings) -> None:
    """List every VM: id, name, status."""
    summaries = views.list_vms(settings)
    for summary in summaries:
        if summary.problem is not None:
            warn(f"VM {summary.vmid}: config cannot be read: {summary.problem}")
    click.echo(f"{'VMID':>10} {'NAME':<24} STATUS")
    for summary in summaries:
        name = summary.name or ("(config unreadable)" if summary.problem else "")
        click.echo(f"{summary.vmid:>10} {name:<24} {summary.status}")


# --- snapshots ----------------------------------------------------------------------------


def _report_snapshot(result: snapshots.SnapshotResult) -> None:
    for message in result.warnings:
        warn(message)
    for message in result.notes:
        click.echo(message)


@command.command(name="snapshot")
@click.argument("vmid", type=int)
@click.argument("name")
@click.option("--description", metavar="TEXT", help="A description of the snapshot.")
@click.option("--vmstate", is_flag=True,
              help="Save the RAM state too: refused, qdisk snapshots disks only.")
@pass_settings
def snapshot(settings: Settings, vmid: int, name: str, description: str | None,
             vmstate: bool) -> None:
    """Take snapshot NAME of VM VMID's disks, running or stopped (as `qm snapshot`)."""
    _report_snapshot(snapshots.snapshot(settings, vmid, name, description=description,
                                        vmstate=vmstate))
    click.echo(f"VM {vmid}: snapshot '{name}' taken")


@command.command(name="delsnapshot")
@click.argument("vmid", type=int)
@click.argument("name")
@pass_settings
def delsnapshot(settings: Settings, vmid: int, name: str) -> None:
    """Delete snapshot NAME of VM VMID, running or stopped (as `qm delsnapshot`)."""
    _report_snapshot(snapshots.delete_snapshot(settings, vmid, name))
    click.echo(f"VM {vmid}: snapshot '{name}' deleted")


@command.command(name="rollback")
@click.argument("vmid", type=int)
@click.argument("name")
@click.option("--start", is_flag=True, help="Start the VM after the rollback.")
@pass_settings
def rollback(settings: Settings, vmid: int, name: str, start: bool) -> None:
    """Roll VM VMID back to snapshot NAME (as `qm rollback`: a running VM is stopped first)."""
    _report_snapshot(snapshots.rollback(settings, vmid, name, start=start))
    click.echo(f"VM {vmid}: rolled back to snapshot '{name}'")


@command.command(name="listsnapshot")
@click.argument("vmid", type=int)
@click.option("--json", "as_json", is_flag=True, help="As the API's snapshot list.")
@pass_settings
def listsnapshot(settings: Settings, vmid: int, as_json: bool) -> None:
    """Print VM VMID's snapshot tree (as `qm listsnapshot`)."""
    entries = snapshots.list_snapshots(settings, vmid)
    if as_json:
        echo_json([entry.as_json() for entry in entries])
        return
    for line in snapshot_tree(entries):
        click.echo(line)


def snapshot_tree(entries: list[snapshots.SnapshotEntry]) -> list[str]:
    """pve-guest-common's print_snapshot_tree: each snapshot under its parent, siblings by
    time (``current`` last), names padded so the times line up."""
    by_name = {entry.name: entry for entry in entries}
    children: dict[str | None, list[str]] = {}
    for entry in entries:
        parent = entry.parent if entry.parent in by_name else None
        children.setdefault(parent, []).append(entry.name)

    def by_time(name: str) -> tuple[int, int]:
        snaptime = by_name[name].snaptime
        return (1, 0) if snaptime is None else (0, snaptime)

    lines: list[str] = []

    def show(prefix: str, name: str) -> None:
        entry = by_name[name]
        description = (entry.description or "no-description").split("\n", 1)[0]
        when = "" if entry.snaptime is None else time.strftime("%Y-%m-%d %H:%M:%S",
                                                              time.localtime(entry.snaptime))
        width = max(0, 30 - len(prefix))
        lines.append(f"{prefix} {name:<{width}} {when:<23} {description}")
        for child in sorted(children.get(name, []), key=by_time):
            show(f"    {prefix}", child)

    for root in sorted(children.get(None, []), key=by_time):
        show("`->", root)
    return lines

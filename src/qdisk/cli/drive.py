"""`qdisk drive`: the drive configuration language."""

from __future__ import annotations

import click

from qdisk.cli.common import EXIT_INVALID, echo_json, warn
from qdisk.drive import parse_drive, print_drive
from qdisk.errors import DriveError

# Exit code of invalid input, as qdisk.cli.main decides it for InvalidInputError.


@click.group(name="drive")
def command() -> None:
    """The Proxmox VE drive syntax (with the qcow2 cache options)."""


@command.command(name="parse")
@click.option("--key", default="scsi0", show_default=True,
              help="The drive key the string belongs to (ide0, sata0, scsi0, virtio0, efidisk0, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.argument("text", metavar="STRING")
@click.pass_context
def parse(ctx: click.Context, key: str, as_json: bool, text: str) -> None:
    """Check a drive STRING and print it in canonical form.

    Every problem is reported, one per line, naming the drive and the property.
    Example: qdisk drive parse 'local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=64'
    """
    try:
        parsed = parse_drive(key, text)
    except DriveError as error:
        if as_json:
            echo_json({"key": error.key,
                       "errors": [{"property": problem.property, "message": problem.message}
                                  for problem in error.problems]})
        else:
            # One line per problem, each with the same prefix (main would prefix only the first).
            for line in error.lines():
                click.echo(f"qdisk: {line}", err=True)
        ctx.exit(EXIT_INVALID)
    normalized = print_drive(parsed.drive)
    if as_json:
        echo_json({"key": key, "normalized": normalized, "drive": dict(parsed.drive.values),
                   "warnings": list(parsed.warnings)})
    else:
        for message in parsed.warnings:
            warn(message)
        click.echo(normalized)

"""`qdisk drive`: the drive configuration language."""

from __future__ import annotations

import re

import click

from qdisk.cli.common import EXIT_INVALID, echo_json, warn
from qdisk.config.drive import parse_drive, print_drive
from qdisk.config.text import BLANKS
from qdisk.errors import DriveError, Problem

DEFAULT_KEY = "scsi0"
# The key of a whole line of a VM config as qemu-server writes it: "scsi0: local:1/x.raw,...".
# The blank after the colon is required: without it "scsi0:x" is a valid volume id (storage
# "scsi0"), while no real volume name starts with a blank.
_CONFIG_LINE_KEY_RE = re.compile(r"([a-z][a-z_]*\d*):(?=\s)", re.ASCII)


@click.group(name="drive")
def command() -> None:
    """The Proxmox VE drive syntax (with the qcow2 cache options)."""


@command.command(name="parse")
@click.option("--key", help=f"The drive key the string belongs to (ide0, sata0, scsi0, virtio0, "
                            f"efidisk0, tpmstate0, unused0, ...)  [default: the line's key, "
                            f"else {DEFAULT_KEY}]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.argument("text", metavar="STRING")
@click.pass_context
def parse(ctx: click.Context, key: str | None, as_json: bool, text: str) -> None:
    """Check a drive STRING and print it in canonical form.

    STRING is a drive's value, or a whole line of a VM config (KEY: VALUE).
    Every problem is reported, one per line, naming the drive and the property.

    \b
    Examples:
      qdisk drive parse 'local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=64'
      qdisk drive parse 'efidisk0: local-lvm:vm-100-disk-1,efitype=4m,size=4M'
    """
    try:
        key, value = _key_and_value(key, text)
        parsed = parse_drive(key, value)
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


def _key_and_value(key: str | None, text: str) -> tuple[str, str]:
    """The drive key and value of STRING: a pasted config line brings its own key."""
    line = _CONFIG_LINE_KEY_RE.match(text)
    if line is None:
        return DEFAULT_KEY if key is None else key, text
    # The value's blanks are stripped apart: a lazy regex before them is quadratic on a run.
    line_key, value = line.group(1), text[line.end():].strip(BLANKS)
    if key is not None and key != line_key:
        raise DriveError(key, [Problem(None, f"the string is a line of {line_key}, "
                                             f"not of {key}")])
    return line_key, value

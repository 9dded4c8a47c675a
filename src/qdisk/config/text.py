"""Config files (a VM's, ``storage.cfg``) as text, and the blanks of their lines.

A file is UTF-8 text split into lines on ``\\n``, as Proxmox VE's Perl reads it. A byte
that is not UTF-8, or a NUL (no argument of a QEMU command can carry one), is refused
naming the file and the line, so a damaged file is reported instead of half read.
"""

from __future__ import annotations

from pathlib import Path

from qdisk.errors import ConfigFileError

# The blanks of Perl's (and ASCII regex) \s: the parsers split lines on these only.
BLANKS = " \t\n\r\f\v"


def read_config(path: Path) -> str:
    """The text of ``path``; raises ConfigFileError for a byte that is not UTF-8 or a NUL
    (OSError when it cannot be read)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigFileError(f"{path}: line {line}: not UTF-8 text "
                              f"(byte 0x{data[error.start]:02X})") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise ConfigFileError(f"{path}: line {line}: NUL character")
    return text

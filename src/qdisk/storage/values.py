"""The value syntax of storage.cfg properties, checked as pve-storage's formats check them.

A check takes the value's text and returns None, or pve-common's message for what is
wrong (``invalid format - value does not look like a valid absolute path``). Lists
(``content``, ``nodes``, ``monhost``) are split as PVE::Tools::split_list splits them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from qdisk.config import propstring
from qdisk.config.propstring import parse_boolean

Check = Callable[[str], "str | None"]

# PVE::Tools::split_list: NUL, ';', ',' and whitespace separate list entries.
_LIST_SEPARATOR_RE = re.compile(r"[\0;,\s]+")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
# pve-common's DNS name (pve_verify_dns_name) and node name (pve-node).
_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_DNS_NAME_RE = re.compile(rf"(?:{_DNS_LABEL}\.)*{_DNS_LABEL}", re.ASCII)
_NODE_RE = re.compile(_DNS_LABEL, re.ASCII)
# verify_path: absolute, and not starting with a shell meta character (unanchored at
# the end, as pve-storage's regex is).
_PATH_RE = re.compile(r"/[^;()]+")
_VGNAME_RE = re.compile(r"[a-z0-9][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE | re.ASCII)
_PORTAL_RE = re.compile(r"(?:\[([^\]]+)\]|([^:\[\]]+))(?::([0-9]+))?")
# verify_dir_override: CONTENT=RELATIVE_PATH without '..' segments.
_DIR_OVERRIDE_RE = re.compile(r"([a-z]+)=([^.]*(?:\.?[^.]+)+)")
_CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none")


def split_list(text: str) -> list[str]:
    return [part for part in _LIST_SEPARATOR_RE.split(text) if part]


def string(text: str) -> str | None:
    return None


def boolean(text: str) -> str | None:
    return None if parse_boolean(text) is not None else f"type check ('boolean') failed - got '{text}'"


def integer(minimum: int, maximum: int | None = None) -> Check:
    def check(text: str) -> str | None:
        if not _INTEGER_RE.fullmatch(text):
            return f"type check ('integer') failed - got '{text}'"
        if int(text) < minimum:
            return f"value must have a minimum value of {minimum}"
        if maximum is not None and int(text) > maximum:
            return f"value must have a maximum value of {maximum}"
        return None
    return check


def enum(*choices: str) -> Check:
    def check(text: str) -> str | None:
        if text in choices:
            return None
        return f"value '{text}' does not have a value in the enumeration '{', '.join(choices)}'"
    return check


def _format(message: str, valid: Callable[[str], bool]) -> Check:
    def check(text: str) -> str | None:
        return None if valid(text) else f"invalid format - {message}"
    return check


def _each(check: Check) -> Check:
    """A list format: every entry checked (the first wrong one reported)."""
    def check_list(text: str) -> str | None:
        return next((error for part in split_list(text) if (error := check(part))), None)
    return check_list


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_server(text: str) -> bool:
    return is_ip(text) or _DNS_NAME_RE.fullmatch(text) is not None


def split_host_port(text: str) -> tuple[str, str | None] | None:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    if is_ip(text):
        return text, None
    match = _PORTAL_RE.fullmatch(text)
    if match is None:
        return None
    return match.group(1) or match.group(2), match.group(3)


def _is_portal(text: str) -> bool:
    parts = split_host_port(text)
    return parts is not None and is_server(parts[0]) and (parts[1] is None or int(parts[1]) < 65536)


def _is_dir_override(text: str) -> bool:
    match = _DIR_OVERRIDE_RE.fullmatch(text)
    return match is not None and match.group(1) in _CONTENT_TYPES and len(match.group(2)) < 1023


path = _format("value does not look like a valid absolute path", lambda text: bool(_PATH_RE.match(text)))
server = _format("value does not look like a valid server name or IP address", is_server)
portal = _format("value does not look like a valid portal address", _is_portal)
portal_list = _each(portal)
vgname = _format("value does not look like a valid volume group name",
                 lambda text: _VGNAME_RE.fullmatch(text) is not None)
node_list = _each(_format("value does not look like a valid node name",
                          lambda text: _NODE_RE.fullmatch(text) is not None))
volume_id = _format("value does not look like a valid volume ID",
                    lambda text: propstring.VOLUME_ID.check(text) is None)
mount_options = _format("value does not look like valid mount options",
                        lambda text: re.fullmatch(r"\S+", text) is not None)
content_dirs = _each(_format("value does not look like a valid directory override",
                             _is_dir_override))


def content_list(text: str) -> str | None:
    unknown = [part for part in split_list(text) if part not in _CONTENT_TYPES]
    return f"invalid format - invalid content type '{unknown[0]}'" if unknown else None


def property_string(schema: propstring.Schema) -> Check:
    """A nested property string (``prune-backups keep-last=3,keep-daily=7``)."""
    def check(text: str) -> str | None:
        problems = propstring.parse_property_string(schema, text).problems
        if not problems:
            return None
        problem = problems[0]
        return f"invalid format - {problem.property + ': ' if problem.property else ''}{problem.message}"
    return check


_KEEP = propstring.integer(minimum=0)
prune_backups = property_string(propstring.Schema({
    "keep-all": propstring.boolean(), "keep-last": _KEEP, "keep-hourly": _KEEP,
    "keep-daily": _KEEP, "keep-weekly": _KEEP, "keep-monthly": _KEEP, "keep-yearly": _KEEP}))
_KIB_PER_SECOND = propstring.number()
bwlimit = property_string(propstring.Schema({
    name: _KIB_PER_SECOND for name in ("default", "restore", "migration", "clone", "move")}))

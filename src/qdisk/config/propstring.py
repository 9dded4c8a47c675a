"""Property strings as Proxmox VE writes them: ``value,key=value,key=value``.

A generic engine (pve-common's parse_property_string/print_property_string) that knows
nothing about drives: a :class:`Schema` of typed :class:`Property` objects, a default key,
aliases, silently dropped legacy keys and cross-field :class:`Rule` objects. Parsing never
stops at the first problem: every problem is collected as a :class:`~qdisk.errors.Problem`
so the caller can report them all at once. Messages are pve-common's where it has one.
"""

from __future__ import annotations

import enum
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from qdisk.errors import DriveError, Problem
from qdisk.units import INT64_MAX, INT64_MIN, format_size, parse_size, whole_number

# The longest property string taken (Proxmox VE's limit for a description): a path of
# PATH_MAX and every option of a drive fit, and a hostile string cannot make the checks
# and their report huge.
MAX_LENGTH = 8192

Value = bool | int | float | str
"""A typed property value: booleans, integers (sizes in bytes), numbers, strings."""


class Kind(enum.Enum):
    BOOLEAN = "boolean"
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    SIZE = "disk-size"


@dataclass(frozen=True)
class StringFormat:
    """A named string format (pve-common's ``format``); ``check`` returns an error or None."""

    name: str
    check: Callable[[str], str | None]


@dataclass(frozen=True)
class Property:
    kind: Kind
    optional: bool = True
    default_key: bool = False
    # Integers and sizes without a maximum (or minimum) are held to 64 bits, as every
    # consumer (QEMU, JSON, Perl) holds them.
    minimum: int | float | None = None
    maximum: int | float | None = None
    # Why the maximum is what it is, added to its message (``QEMU's limit``).
    maximum_reason: str = ""
    enum: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    max_length: int | None = None
    format: StringFormat | None = None
    description: str = ""


def boolean(description: str = "") -> Property:
    return Property(Kind.BOOLEAN, description=description)


def integer(minimum: int | None = None, maximum: int | None = None,
            description: str = "", *, maximum_reason: str = "") -> Property:
    return Property(Kind.INTEGER, minimum=minimum, maximum=maximum,
                    maximum_reason=maximum_reason, description=description)


def number(minimum: float | None = None, maximum: float | None = None,
           description: str = "", *, maximum_reason: str = "") -> Property:
    return Property(Kind.NUMBER, minimum=minimum, maximum=maximum,
                    maximum_reason=maximum_reason, description=description)


def choice(*values: str, description: str = "") -> Property:
    """A string restricted to an enumeration."""
    return Property(Kind.STRING, enum=values, description=description)


def string(*, pattern: str | None = None, max_length: int | None = None,
           format: StringFormat | None = None, optional: bool = True,
           default_key: bool = False, description: str = "") -> Property:
    # ASCII classes: Perl's \d and \s on the config's bytes are ASCII.
    compiled = re.compile(pattern, re.ASCII) if pattern is not None else None
    return Property(Kind.STRING, optional=optional, default_key=default_key, pattern=compiled,
                    max_length=max_length, format=format, description=description)


def disk_size(description: str = "") -> Property:
    return Property(Kind.SIZE, minimum=0, maximum=INT64_MAX, maximum_reason="bytes: 8 EiB - 1",
                    description=description)


@dataclass(frozen=True)
class Rule:
    """A cross-field check. It runs only when none of ``properties`` had a per-key problem,
    so it never reports a consequence of a value that is already reported as wrong."""

    properties: tuple[str, ...]
    check: Callable[[Mapping[str, Value]], Iterable[Problem]]


@dataclass(frozen=True)
class Schema:
    properties: Mapping[str, Property]
    aliases: Mapping[str, str] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()

    @property
    def default_key(self) -> str | None:
        return next((name for name, prop in self.properties.items() if prop.default_key), None)


@dataclass
class Checked:
    """The outcome of parsing or checking: typed values of the valid properties, every
    problem found, and the properties that had a problem."""

    values: dict[str, Value]
    problems: list[Problem]
    invalid: set[str]

    def add(self, name: str | None, message: str) -> None:
        self.problems.append(Problem(name, message))
        if name is not None:
            self.invalid.add(name)


class _Invalid(Exception):
    """A value is wrong; the message is the user's explanation."""


# --- string formats -----------------------------------------------------------------

_URL_ENCODED_RE = re.compile(r"[-%a-zA-Z0-9_.!~*'()]*")
# pve-common's $CONFIGID_RE (case-insensitive, ASCII): a storage id has at least two
# characters. Also what qdisk.storage parses storage ids, volume ids and allocations with.
STORAGE_ID_PATTERN = r"[a-z][a-z0-9\-_.]*[a-z0-9]"
_VOLUME_ID_RE = re.compile(rf"{STORAGE_ID_PATTERN}:.+", re.IGNORECASE | re.ASCII | re.DOTALL)


def _check_volume_id(text: str) -> str | None:
    return None if _VOLUME_ID_RE.fullmatch(text) else f"unable to parse volume ID '{text}'"


def _check_volume_id_or_path(text: str) -> str | None:
    return None if text.startswith("/") else _check_volume_id(text)


def url_encoded(max_bytes: int) -> StringFormat:
    """pve-common's ``urlencoded`` format, and what the text decodes to: at most
    ``max_bytes`` bytes (qemu-server's limit for a serial or model), printable ASCII (what
    those device fields hold; a NUL could not even be passed to QEMU)."""

    def check(text: str) -> str | None:
        if not _URL_ENCODED_RE.fullmatch(text):
            return f"invalid urlencoded string: {text}"
        decoded = urllib.parse.unquote_to_bytes(text)
        unprintable = next((byte for byte in decoded if not 0x20 <= byte <= 0x7E), None)
        if unprintable is not None:
            return f"the decoded value must be printable ASCII, not %{unprintable:02X}"
        if len(decoded) > max_bytes:
            return f"the decoded value may only be {max_bytes} bytes long, not {len(decoded)}"
        return None

    return StringFormat("urlencoded", check)


VOLUME_ID = StringFormat("pve-volume-id", _check_volume_id)
VOLUME_ID_OR_PATH = StringFormat("pve-volume-id-or-absolute-path", _check_volume_id_or_path)


# --- single values ------------------------------------------------------------------

_BOOLEAN_TRUE = re.compile(r"1|on|yes|true", re.IGNORECASE | re.ASCII)
_BOOLEAN_FALSE = re.compile(r"0|off|no|false", re.IGNORECASE | re.ASCII)
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.[0-9]+|[0-9]+\.|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")


_LIST_SEPARATOR_RE = re.compile(r"[,;\s]+")


def split_list(text: str) -> list[str]:
    """Proxmox VE's list syntax (PVE::Tools::split_list, ``delete=a,b c;d``): items separated
    by commas, semicolons or blanks."""
    return [item for item in _LIST_SEPARATOR_RE.split(text) if item]


def parse_boolean(text: str) -> bool | None:
    if _BOOLEAN_TRUE.fullmatch(text):
        return True
    if _BOOLEAN_FALSE.fullmatch(text):
        return False
    return None


def _type_error(prop: Property, value: object) -> _Invalid:
    type_name = "integer" if prop.kind is Kind.SIZE else prop.kind.value
    return _Invalid(f"type check ('{type_name}') failed - got '{value}'")


def _from_text(prop: Property, text: str) -> Value:
    """The typed value of a property's text, without range or format checks."""
    if prop.kind is Kind.BOOLEAN:
        flag = parse_boolean(text)
        if flag is None:
            raise _type_error(prop, text)
        return flag
    if prop.kind is Kind.INTEGER:
        if not _INTEGER_RE.fullmatch(text):
            raise _type_error(prop, text)
        magnitude = whole_number(text.lstrip("+-"))
        return -magnitude if text.startswith("-") else magnitude
    if prop.kind is Kind.NUMBER:
        if not _NUMBER_RE.fullmatch(text):
            raise _type_error(prop, text)
        return float(text)
    if prop.kind is Kind.SIZE:
        size = parse_size(text)
        if size is None:
            raise _Invalid(f"invalid format - value does not look like a valid disk size: {text}")
        return size
    return text


def _typed(prop: Property, value: object) -> Value:
    """A value given as a Python object, checked for its type (bool is not an integer)."""
    if prop.kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise _type_error(prop, value)
        return value
    if prop.kind in (Kind.INTEGER, Kind.SIZE):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(prop, value)
        return value
    if prop.kind is Kind.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(prop, value)
        return float(value)
    if not isinstance(value, str):
        raise _type_error(prop, value)
    return value


def _bounds(prop: Property) -> tuple[int | float | None, int | float | None]:
    """The property's range; integers and sizes are 64-bit when it sets no bound."""
    if prop.kind in (Kind.INTEGER, Kind.SIZE):
        return (INT64_MIN if prop.minimum is None else prop.minimum,
                INT64_MAX if prop.maximum is None else prop.maximum)
    return prop.minimum, prop.maximum


def _check(name: str, prop: Property, value: Value) -> None:
    """Range, enumeration, length, pattern and format checks of a typed value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        minimum, maximum = _bounds(prop)
        if minimum is not None and value < minimum:
            raise _Invalid(f"value must have a minimum value of {minimum}")
        if maximum is not None and value > maximum:
            reason = f" ({prop.maximum_reason})" if prop.maximum_reason else ""
            raise _Invalid(f"value must have a maximum value of {maximum}{reason}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid("value must be a finite number")
        return
    if not isinstance(value, str):
        return
    if value == "":
        raise _Invalid("value must not be empty")
    # A property string is one line of a config file and is split on commas.
    if "," in value:
        raise _Invalid(f"illegal value with commas for {name}")
    if "\n" in value or "\r" in value:
        raise _Invalid("value must not contain a line break")
    if "\0" in value:
        # No program argument can carry one.
        raise _Invalid("value must not contain a NUL character")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            # Bytes that are not UTF-8 reach Python as lone surrogates; a config cannot hold them.
            raise _Invalid("value must be UTF-8 text") from None
    if prop.enum and value not in prop.enum:
        raise _Invalid(f"value '{value}' does not have a value in the enumeration "
                       f"'{', '.join(prop.enum)}'")
    if prop.max_length is not None and len(value) > prop.max_length:
        raise _Invalid(f"value may only be {prop.max_length} characters long")
    if prop.pattern is not None and not prop.pattern.fullmatch(value):
        raise _Invalid("value does not match the regex pattern")
    if prop.format is not None and (error := prop.format.check(value)) is not None:
        raise _Invalid(f"invalid format - {error}")


# --- whole strings ------------------------------------------------------------------

_BLANK_RE = re.compile(r"\s*", re.ASCII)
_KEY_VALUE_RE = re.compile(r"([^=]+)=(.+)", re.DOTALL)
_MISSING_VALUE_RE = re.compile(r"([^=]+)=", re.DOTALL)


def check_length(key: str, text: str) -> None:
    """Refuse (DriveError) the string of ``key`` beyond :data:`MAX_LENGTH`: the work its
    checks do, and the problems they report, grow with it."""
    if len(text) > MAX_LENGTH:
        raise DriveError(key, [Problem(None, f"value may only be {MAX_LENGTH} characters long")])


def parse_property_string(schema: Schema, text: str) -> Checked:
    """Typed values and every problem of ``text`` (cross-field rules not yet applied)."""
    result = Checked({}, [], set())
    given_as: dict[str, str] = {}
    default_key = schema.default_key
    for part in text.split(","):
        if _BLANK_RE.fullmatch(part):
            continue
        if "=" not in part:
            if default_key is None:
                result.add(None, "value without key, but schema does not define a default key")
                continue
            written, value = default_key, part
        elif match := _KEY_VALUE_RE.fullmatch(part):
            written, value = match.groups()
        else:
            missing = _MISSING_VALUE_RE.fullmatch(part)
            if missing:
                result.add(missing.group(1), "missing key in comma-separated list property "
                                             "(no value after '=')")
            else:
                result.add(None, f"missing key in comma-separated list property: '{part}'")
            continue
        _take(schema, result, given_as, written, lambda prop: _from_text(prop, value))
    _check_required(schema, result)
    return result


def check_values(schema: Schema, values: Mapping[str, object]) -> Checked:
    """The same per-key checks as :func:`parse_property_string`, for typed values
    (aliases are resolved, dropped keys dropped)."""
    result = Checked({}, [], set())
    given_as: dict[str, str] = {}
    for written, value in values.items():
        _take(schema, result, given_as, written, lambda prop: _typed(prop, value))
    _check_required(schema, result)
    return result


def _take(schema: Schema, result: Checked, given_as: dict[str, str], written: str,
          typed_value: Callable[[Property], Value]) -> None:
    """The per-key checks of one ``key=value``, shared by parsing text and checking typed
    values so both accept exactly the same drives. ``given_as`` maps each key seen so far
    to how it was written: an alias and its target are the same key, so repeating it in
    either spelling is a duplicate, and the message says which spellings met."""
    name = schema.aliases.get(written, written)
    if name in given_as:
        alias = written if written != name else given_as[name]
        alias_note = f" ({alias} is an alias of {name})" if alias != name else ""
        result.add(name, f"duplicate key in comma-separated list property: {written}{alias_note}")
        return
    given_as[name] = written
    if name in schema.dropped:
        return
    prop = schema.properties.get(name)
    if prop is None:
        result.add(name, "property is not defined in schema and the schema does not "
                         "allow additional properties")
        return
    try:
        typed = typed_value(prop)
        _check(name, prop, typed)
    except _Invalid as error:
        result.add(name, str(error))
    else:
        result.values[name] = typed


def _check_required(schema: Schema, result: Checked) -> None:
    for name, prop in schema.properties.items():
        if not prop.optional and name not in result.values and name not in result.invalid:
            result.add(name, "property is missing and it is not optional")


def check_rules(rules: Iterable[Rule], result: Checked) -> None:
    """Run the cross-field rules whose properties are all valid; add their problems."""
    for rule in rules:
        if not result.invalid.intersection(rule.properties):
            result.problems.extend(rule.check(result.values))


# --- printing -----------------------------------------------------------------------


def format_value(prop: Property, value: Value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if prop.kind is Kind.SIZE and isinstance(value, int):
        return format_size(value)
    if isinstance(value, float):
        # Whole numbers print without ".0"; repr() is the shortest text that reads back.
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    return str(value)


def canonical_order(schema: Schema, names: Iterable[str]) -> list[str]:
    """qemu-server's order: the default key, the non-optional keys, then the rest, each
    group in plain ASCII order."""
    default_key = schema.default_key
    names = set(names)
    required = sorted(name for name in names
                      if name != default_key and not schema.properties[name].optional)
    rest = sorted(names - set(required) - {default_key})
    return ([default_key] if default_key in names else []) + required + rest


def print_property_string(schema: Schema, values: Mapping[str, Value]) -> str:
    """The canonical string of checked values. A value with a comma cannot be written
    (pve-common: ``illegal value with commas``): raises ValueError, a programming error
    since checked values never contain one."""
    parts = []
    for name in canonical_order(schema, values):
        text = format_value(schema.properties[name], values[name])
        if "," in text:
            raise ValueError(f"illegal value with commas for {name}")
        # A bare default value with '=' or only blanks would not read back as itself.
        bare = name == schema.default_key and "=" not in text and not _BLANK_RE.fullmatch(text)
        parts.append(text if bare else f"{name}={text}")
    return ",".join(parts)

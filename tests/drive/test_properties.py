"""Property tests: canonical strings are fixed points, printing and parsing again gives
the same drive, and no text makes the parser fail with anything but DriveError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qdisk.config import propstring
from qdisk.config.drive import Drive, drive_keys, parse_drive, print_drive, schema_of
from qdisk.config.propstring import Kind, Property
from qdisk.errors import DriveError

KEYS = ("ide0", "sata1", "scsi2", "virtio3", "efidisk0", "tpmstate0", "unused4")
FILES = ("local:100/vm-100-disk-0.qcow2", "local-lvm:vm-100-disk-0", "/dev/sdb", "none",
         "cdrom", "local:100/vm-100-disk-0.raw")

quick = settings(max_examples=300, deadline=None)


def text_of(prop: Property) -> st.SearchStrategy[str]:
    """Strings for one property, mostly valid, sometimes not."""
    if prop.kind is Kind.BOOLEAN:
        return st.sampled_from(["1", "0", "on", "off", "Yes", "no", "TRUE", "false", "2"])
    if prop.kind is Kind.INTEGER:
        low = prop.minimum if prop.minimum is not None else -10
        high = prop.maximum if prop.maximum is not None else 10**6
        return st.one_of(st.integers(low, high).map(str),
                         st.sampled_from(["512", "4096", "65536", "-1", "+3", "x"]))
    if prop.kind is Kind.NUMBER:
        return st.one_of(st.floats(0, 1e6).map(repr), st.sampled_from(["1.", ".5", "2e3", "x"]))
    if prop.kind is Kind.SIZE:
        return st.one_of(st.integers(0, 1 << 44).map(str),
                         st.tuples(st.integers(0, 4096), st.sampled_from(["", "K", "M", "G", "T", "GiB"]))
                         .map(lambda parts: f"{parts[0]}{parts[1]}"),
                         st.sampled_from(["1.5G", "0.1K", "32X"]))
    if prop.enum:
        return st.sampled_from([*prop.enum, "bogus"])
    if prop.default_key:
        return st.sampled_from(FILES)
    return st.text(st.sampled_from("abcXYZ019-_%. "), min_size=1, max_size=20)


@st.composite
def drive_strings(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(st.sampled_from(KEYS))
    schema = schema_of(key)
    names = draw(st.lists(st.sampled_from(sorted(schema.properties)), max_size=8, unique=True))
    parts = [f"{name}={draw(text_of(schema.properties[name]))}" for name in names
             if name != "file"]
    parts.insert(draw(st.integers(0, len(parts))), draw(text_of(schema.properties["file"])))
    return key, ",".join(parts)


def parse_or_none(key: str, text: str) -> Drive | None:
    try:
        return parse_drive(key, text).drive
    except DriveError:
        return None


@quick
@given(drive_strings())
def test_printing_a_parsed_drive_and_parsing_it_again_gives_the_same_drive(
        case: tuple[str, str]) -> None:
    key, text = case
    drive = parse_or_none(key, text)
    if drive is not None:
        canonical = print_drive(drive)
        assert parse_drive(key, canonical).drive == drive
        assert print_drive(parse_drive(key, canonical).drive) == canonical


@quick
@given(drive_strings())
def test_parsing_is_deterministic_and_errors_name_known_properties(case: tuple[str, str]) -> None:
    key, text = case
    try:
        parse_drive(key, text)
    except DriveError as error:
        assert error.problems
        known = {*schema_of(key).properties, key}
        assert all(problem.property in known for problem in error.problems), error.lines()


@quick
@given(st.sampled_from(drive_keys() + ("net0", "scsi99", "")), st.text(max_size=60))
def test_arbitrary_text_raises_nothing_but_drive_error(key: str, text: str) -> None:
    drive = parse_or_none(key, text)
    if drive is not None:
        assert parse_drive(key, print_drive(drive)).drive == drive


@quick
@given(st.text(st.sampled_from("scsi0=,:/lcaohe-2qwr1.x"), max_size=40))
def test_text_near_the_syntax_raises_nothing_but_drive_error(text: str) -> None:
    drive = parse_or_none("scsi0", text)
    if drive is not None:
        assert print_drive(parse_drive("scsi0", print_drive(drive)).drive) == print_drive(drive)


@quick
@given(st.integers(0, 1 << 50))
def test_sizes_print_and_parse_back(size: int) -> None:
    assert propstring.parse_size(propstring.format_size(size)) == size

"""The generic property-string engine, on schemas of its own (nothing drive-specific)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from qdisk import units
from qdisk.config import propstring
from qdisk.config.propstring import Rule, Schema, Value
from qdisk.errors import Problem


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("1000", 1000), ("1K", 1024), ("1KiB", 1024), ("32G", 32 << 30),
    ("2T", 2 << 40), ("1.5G", 1536 << 20), ("0.1K", 102), ("1.5", 1), ("512MiB", 512 << 20),
])
def test_parse_size(text: str, size: int) -> None:
    assert units.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1k", "1Ki", "1KB", "1P", "-1", "1.", ".5G", " 1G", "1G ",
                                  "1e3", "1,5G", "١G"])
def test_parse_size_refuses(text: str) -> None:
    assert units.parse_size(text) is None


@pytest.mark.parametrize(("size", "text"), [
    (0, "0T"), (1, "1"), (1000, "1000"), (1024, "1K"), (104858 * 1024, "104858K"),
    (1536 << 20, "1536M"), (32 << 30, "32G"), (2048 << 30, "2T"), (3 << 50, "3072T"),
])
def test_format_size(size: int, text: str) -> None:
    assert units.format_size(size) == text


@pytest.mark.parametrize(("text", "flag"), [
    ("1", True), ("on", True), ("Yes", True), ("TRUE", True),
    ("0", False), ("off", False), ("NO", False), ("False", False),
    ("2", None), ("y", None), ("", None), ("yeſ", None), ("true ", None),
])
def test_parse_boolean(text: str, flag: bool | None) -> None:
    assert propstring.parse_boolean(text) is flag


def _total_below_limit(values: Mapping[str, Value]) -> Iterator[Problem]:
    total, limit = values.get("total"), values.get("limit")
    if isinstance(total, int) and isinstance(limit, int) and total > limit:
        yield Problem("total", "must not exceed limit")


# A schema unlike any drive: no default key, a required key, an alias, a dropped key.
SCHEMA = Schema(
    properties={
        "name": propstring.string(optional=False, max_length=5),
        "total": propstring.integer(0, 100),
        "limit": propstring.integer(),
        "ratio": propstring.number(),
        "on": propstring.boolean(),
    },
    aliases={"max": "limit"},
    dropped=frozenset({"old"}),
    rules=(Rule(("total", "limit"), _total_below_limit),),
)


def parse(text: str) -> propstring.Checked:
    checked = propstring.parse_property_string(SCHEMA, text)
    propstring.check_rules(SCHEMA.rules, checked)
    return checked


def test_required_keys_print_first_then_ascii_order() -> None:
    checked = parse("total=3,on=yes,ratio=0.25,old=x,name=ab,max=7")
    assert checked.problems == []
    assert checked.values == {"total": 3, "on": True, "ratio": 0.25, "name": "ab", "limit": 7}
    assert propstring.print_property_string(SCHEMA, checked.values) == \
        "name=ab,limit=7,on=1,ratio=0.25,total=3"


def test_value_without_key_needs_a_default_key() -> None:
    assert parse("name=a,bare").problems == [
        Problem(None, "value without key, but schema does not define a default key")]


def test_every_problem_is_collected() -> None:
    checked = parse("total=101,ratio=x,name=toolong,max=1,limit=2,on=2")
    assert checked.problems == [
        Problem("total", "value must have a maximum value of 100"),
        Problem("ratio", "type check ('number') failed - got 'x'"),
        Problem("name", "value may only be 5 characters long"),
        Problem("limit", "duplicate key in comma-separated list property: limit "
                         "(max is an alias of limit)"),
        Problem("on", "type check ('boolean') failed - got '2'"),
    ]


def test_rules_run_only_on_valid_properties() -> None:
    assert parse("name=a,total=50,limit=10").problems == [Problem("total", "must not exceed limit")]
    # limit is wrong: the rule would only repeat that, so it does not run.
    assert [p.property for p in parse("name=a,total=50,limit=x").problems] == ["limit"]


def test_missing_required_key() -> None:
    assert parse("total=1").problems == [
        Problem("name", "property is missing and it is not optional")]


def test_numbers_print_so_that_they_read_back() -> None:
    for value in (0.0, 1.0, 0.954, 1e-7, 1.5e20, 123456789.125, -2.0):
        text = propstring.format_value(SCHEMA.properties["ratio"], value)
        assert parse(f"name=a,ratio={text}").values["ratio"] == value, text
    assert propstring.format_value(SCHEMA.properties["ratio"], 200.0) == "200"


def test_non_finite_numbers_are_refused() -> None:
    assert parse("name=a,ratio=1e999").problems == [
        Problem("ratio", "value must be a finite number")]


@pytest.mark.parametrize(("text", "problem"), [
    ("limit=9223372036854775808", "value must have a maximum value of 9223372036854775807"),
    ("limit=-9223372036854775809", "value must have a minimum value of -9223372036854775808"),
    # More digits than Python's int() converts.
    (f"limit={'9' * 5000}", "value must have a maximum value of 9223372036854775807"),
    (f"limit=-{'9' * 5000}", "value must have a minimum value of -9223372036854775808"),
    (f"total=+{'9' * 5000}", "value must have a maximum value of 100"),
])
def test_integers_are_64_bit_unless_bounded(text: str, problem: str) -> None:
    assert parse(f"name=a,{text}").problems == [Problem(text.split("=")[0], problem)]


def test_leading_zeros_do_not_count_as_digits() -> None:
    assert parse(f"name=a,limit=-{'0' * 5000}7,total={'0' * 5000}").values == \
        {"name": "a", "limit": -7, "total": 0}


def test_a_maximum_names_its_reason() -> None:
    schema = Schema({"rate": propstring.number(0.5, 2.5, maximum_reason="the device's limit")})
    checked = propstring.parse_property_string(schema, "rate=2.75")
    assert checked.problems == [
        Problem("rate", "value must have a maximum value of 2.5 (the device's limit)")]
    assert propstring.parse_property_string(schema, "rate=0.25").problems == [
        Problem("rate", "value must have a minimum value of 0.5")]


@pytest.mark.parametrize("text", ["1" * 5000, "1" * 500 + ".5T", "9" * 21])
def test_sizes_too_long_for_int_are_beyond_64_bits(text: str) -> None:
    size = units.parse_size(text)
    assert size is not None and size > units.INT64_MAX


@pytest.mark.parametrize(("value", "problem"), [
    ("a\0b", "value must not contain a NUL character"),
    ("a\udcffb", "value must be UTF-8 text"),
])
def test_strings_a_config_cannot_hold_are_refused(value: str, problem: str) -> None:
    assert propstring.check_values(SCHEMA, {"name": value}).problems == [Problem("name", problem)]


def test_check_values_checks_types() -> None:
    checked = propstring.check_values(SCHEMA, {"name": "a,b", "total": True, "ratio": 1,
                                               "on": 1, "max": 5, "old": 1})
    assert checked.values == {"ratio": 1.0, "limit": 5}
    assert checked.problems == [
        Problem("name", "illegal value with commas for name"),
        Problem("total", "type check ('integer') failed - got 'True'"),
        Problem("on", "type check ('boolean') failed - got '1'"),
    ]


def test_printing_refuses_commas() -> None:
    with pytest.raises(ValueError, match="illegal value with commas for name"):
        propstring.print_property_string(SCHEMA, {"name": "a,b"})


@pytest.mark.parametrize(("fmt", "good", "bad", "message"), [
    (propstring.url_encoded(20), "a%20b-_.!~*'()", "a b", "invalid urlencoded string: a b"),
    (propstring.url_encoded(20), "%41%7E", "%41%00", "the decoded value must be printable ASCII, not %00"),
    (propstring.url_encoded(20), "%41%7E", "A%7F", "the decoded value must be printable ASCII, not %7F"),
    (propstring.url_encoded(3), "%41bc", "%41b%20c",
     "the decoded value may only be 3 bytes long, not 4"),
    (propstring.VOLUME_ID, "local-zfs:vm-1-disk-0", "/dev/sda", "unable to parse volume ID '/dev/sda'"),
    (propstring.VOLUME_ID, "ab:x", "a:x", "unable to parse volume ID 'a:x'"),
    (propstring.VOLUME_ID_OR_PATH, "/dev/sda", "dev/sda", "unable to parse volume ID 'dev/sda'"),
])
def test_string_formats(fmt: propstring.StringFormat, good: str, bad: str, message: str) -> None:
    assert fmt.check(good) is None
    assert fmt.check(bad) == message

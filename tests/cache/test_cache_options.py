"""The descriptor table of the qcow2 options: every place that knows an option reads it."""

from __future__ import annotations

import pytest

from qdisk.cache import CacheOptions, drive_cache_options, parse_cache_options
from qdisk.cache.options import (
    AUTO_SIZE_KEY,
    QCOW2_CACHE_KEYS,
    QCOW2_OPTIONS,
    QEMU_OPTION_NAMES,
    Qcow2Option,
    drive_string_order,
    ignored_qcow2_keys,
    qemu_parse_order,
)
from qdisk.config.drive import parse_drive, schema_of
from qdisk.config.propstring import Kind
from qdisk.qemu.cacheview import option_descriptors
from qdisk.vm.live import CACHE_KEYS


def test_the_drive_schema_takes_each_option_with_its_range() -> None:
    properties = schema_of("scsi0").properties
    for option in QCOW2_OPTIONS:
        prop = properties[option.drive_key]
        if option.boolean:
            assert prop.kind is Kind.BOOLEAN
        else:
            assert (prop.kind, prop.minimum, prop.maximum) == \
                (Kind.INTEGER, option.minimum, option.maximum), option.drive_key


def test_every_qemu_option_has_a_place_in_both_orders_and_a_unit_factor() -> None:
    assert [option.qemu_name for option in qemu_parse_order()] == \
        ["refcount-cache-size", "cache-size", "cache-clean-interval", "l2-cache-entry-size",
         "l2-cache-size"]
    assert [option.qemu_name for option in drive_string_order()] == \
        ["cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
         "cache-clean-interval"]
    assert set(QEMU_OPTION_NAMES) == {option.qemu_name for option in qemu_parse_order()}
    assert AUTO_SIZE_KEY == "qcow2-cache-size-based-on-disk"
    assert CACHE_KEYS == set(QCOW2_CACHE_KEYS)


@pytest.mark.parametrize("option", [option for option in QCOW2_OPTIONS if option.qemu_name],
                         ids=lambda option: option.drive_key)
def test_a_drive_value_reaches_qemu_in_qemus_unit(option: Qcow2Option) -> None:
    assert option.qemu_name and option.minimum is not None
    value = max(option.minimum, 1) * (1024 if option.unit == "bytes" else 1)
    drive = parse_drive("scsi0", f"local:100/vm-100-disk-0.qcow2,{option.drive_key}={value}").drive
    assert drive_cache_options(drive).as_qemu() == {option.qemu_name: value * option.factor}
    # QEMU's own syntax reads the same number back.
    assert parse_cache_options({option.qemu_name: str(value * option.factor)}) == \
        CacheOptions(**{option.qemu_name.replace("-", "_"): value * option.factor})


def test_cache_options_refuse_an_option_qemu_does_not_have() -> None:
    with pytest.raises(TypeError, match="no qcow2 option 'l3-cache-size'"):
        CacheOptions(l3_cache_size=1)


def test_one_wording_for_keys_on_a_disk_that_is_not_qcow2() -> None:
    values = {"qcow2-l2-cache-size": 1, "qcow2-cache-size-based-on-disk": False,
              "qcow2-cache-clean-interval": 0}
    assert ignored_qcow2_keys("scsi0", values, "raw", " (the storage's)") == [
        "scsi0.qcow2-l2-cache-size: has no effect: the drive's format is raw (the storage's), "
        "not qcow2",
        "scsi0.qcow2-cache-clean-interval: has no effect: the drive's format is raw (the "
        "storage's), not qcow2"]
    assert ignored_qcow2_keys("scsi0", values, "qcow2") == []


def test_the_editor_gets_every_option_from_the_table() -> None:
    editor = option_descriptors()
    assert list(editor) == list(QCOW2_CACHE_KEYS)
    assert [entry["label"] for entry in editor.values()] == [option.label for option in QCOW2_OPTIONS]
    replaced = [key for key, entry in editor.items() if entry["replaced-by-auto-size"]]
    assert replaced == ["qcow2-cache-size", "qcow2-l2-cache-size", "qcow2-refcount-cache-size"]

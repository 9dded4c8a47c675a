"""The descriptor table of the qcow2 options, held against what it stands for: the Proxmox VE
patch the drive keys come from (the spec: qemu-server's Drive.pm schema, the options
print_drive_commandline_full and generate_format_blockdev give QEMU, the keys
vmconfig_update_disk compares) and the units QEMU reads. QEMU's own names are checked
against a running QEMU in tests/qemu/test_qemu_qcow2_options.py."""

from __future__ import annotations

import pytest

from qdisk.cache import CacheOptions, drive_cache_options, parse_cache_options
from qdisk.cache.options import QCOW2_CACHE_KEYS, drive_string_order, ignored_qcow2_keys, qemu_parse_order
from qdisk.config.drive import parse_drive, schema_of
from qdisk.config.propstring import Kind
from qdisk.qemu.cacheview import option_descriptors
from qdisk.vm.live import CACHE_KEYS

MIB = 1024 * 1024
# The patch's drive schema: key -> (type, minimum, maximum, the QEMU option it sets, the
# factor it multiplies the value with). The clean interval has no maximum there; QEMU takes
# an unsigned int (qdisk's bound, checked in test_cache_model.py).
PATCH_SCHEMA = {
    "qcow2-cache-size": (Kind.INTEGER, 1, 10 * 1024, "cache-size", MIB),
    "qcow2-cache-size-based-on-disk": (Kind.BOOLEAN, None, None, None, None),
    "qcow2-l2-cache-size": (Kind.INTEGER, 1, 10 * 1024, "l2-cache-size", MIB),
    "qcow2-l2-cache-entry-size": (Kind.INTEGER, 512, 2 * MIB, "l2-cache-entry-size", 1),
    "qcow2-refcount-cache-size": (Kind.INTEGER, 1, 10 * 1024, "refcount-cache-size", MIB),
    "qcow2-cache-clean-interval": (Kind.INTEGER, 0, None, "cache-clean-interval", 1),
}
SIZED = [key for key, (_, _, _, qemu_name, _) in PATCH_SCHEMA.items() if qemu_name]


def test_the_drive_schema_takes_each_key_as_the_patch_defines_it() -> None:
    properties = schema_of("scsi0").properties
    assert list(QCOW2_CACHE_KEYS) == list(PATCH_SCHEMA)
    for key, (kind, minimum, maximum, _, _) in PATCH_SCHEMA.items():
        prop = properties[key]
        assert prop.kind is kind, key
        if kind is Kind.INTEGER:
            assert prop.minimum == minimum, key
            assert maximum is None or prop.maximum == maximum, key


def test_the_options_reach_qemu_in_the_patchs_order() -> None:
    # print_drive_commandline_full and generate_format_blockdev append them in this order.
    assert [option.qemu_name for option in drive_string_order()] == \
        ["cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
         "cache-clean-interval"]
    # QEMU's qcow2 reads them in this order (read_cache_sizes, then the clean interval):
    # the first refusal it meets is the one it reports.
    assert [option.qemu_name for option in qemu_parse_order()] == \
        ["refcount-cache-size", "cache-size", "cache-clean-interval", "l2-cache-entry-size",
         "l2-cache-size"]


def test_a_running_vm_takes_live_the_keys_qemu_server_keeps_pending() -> None:
    # The patch's vmconfig_update_disk compares these and answers "skip" (pending); qdisk
    # reopens the node with them instead, and with the auto size (it gives cache-size).
    assert CACHE_KEYS == {"qcow2-cache-size", "qcow2-l2-cache-size", "qcow2-l2-cache-entry-size",
                          "qcow2-refcount-cache-size", "qcow2-cache-clean-interval",
                          "qcow2-cache-size-based-on-disk"}


@pytest.mark.parametrize("key", SIZED)
def test_a_drive_value_reaches_qemu_in_qemus_unit(key: str) -> None:
    _, minimum, _, qemu_name, factor = PATCH_SCHEMA[key]
    assert qemu_name is not None and minimum is not None and factor is not None
    value = max(minimum, 1) * (1024 if factor == 1 and minimum >= 512 else 1)
    drive = parse_drive("scsi0", f"local:100/vm-100-disk-0.qcow2,{key}={value}").drive
    assert drive_cache_options(drive).as_qemu() == {qemu_name: value * factor}
    # QEMU's own syntax reads the same number back.
    assert parse_cache_options({qemu_name: str(value * factor)}) == \
        CacheOptions(**{qemu_name.replace("-", "_"): value * factor})


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


def test_the_editor_shows_each_key_with_the_patchs_type_range_and_unit() -> None:
    editor = option_descriptors()
    assert list(editor) == list(PATCH_SCHEMA)
    units = {MIB: "MiB", None: ""}
    for key, (kind, minimum, maximum, _, factor) in PATCH_SCHEMA.items():
        entry = editor[key]
        assert entry["type"] == kind.value, key
        assert entry["minimum"] == minimum, key
        assert maximum is None or entry["maximum"] == maximum, key
        # The patch's descriptions: "... in MiB", "... in bytes", "... in seconds".
        expected_unit = units.get(factor, "seconds" if minimum == 0 else "bytes")
        assert entry["unit"] == expected_unit, key
    # The auto size gives cache-size, which QEMU splits: the sizes it replaces.
    replaced = [key for key, entry in editor.items() if entry["replaced-by-auto-size"]]
    assert replaced == ["qcow2-cache-size", "qcow2-l2-cache-size", "qcow2-refcount-cache-size"]

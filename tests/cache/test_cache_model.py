"""The auto size, QEMU's model of cache options (checked against real QEMU), advice, drives."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from qdisk.cache import (
    AutoSize,
    CacheOptions,
    QemuCacheError,
    advise,
    auto_size,
    auto_size_for,
    auto_size_or_fallback,
    check_drive_cache,
    default_cache,
    drive_cache_options,
    effective_cache,
    host_allocation_limit,
    parse_cache_options,
    parse_qemu_number,
    parse_qemu_size,
    resolved_cache_options,
)
from qdisk.config.drive import parse_drive
from qdisk.errors import Problem
from qdisk.image.info import read_image
from qdisk.settings import Tools
from qdisk.system.tools import qemu_version

from cache_images import qemu_open_error

# The QEMU tools on PATH.
TOOLS = Tools()

MIB, GIB, TIB = 2**20, 2**30, 2**40


def seed_formula(size: int, cluster: int, refcount_bits: int, extended_l2: bool) -> int:
    """qemu-server's qcow2_cache_size_by_disk_size, transcribed with floats like the Perl."""
    l2 = size * (16 if extended_l2 else 8) / cluster
    l2 = max(l2, 2 * cluster)
    l2 = math.ceil(l2 / cluster) * cluster
    refcount = size * refcount_bits / (8 * cluster)
    refcount = max(refcount, 4 * cluster)
    refcount = math.ceil(refcount / cluster) * cluster
    return int(l2 + refcount)


@pytest.mark.parametrize(("size", "cluster", "bits", "extended"), [
    (TIB, 65536, 16, False), (2 * GIB, 65536, 16, False), (64 * MIB, 512, 16, False),
    (3 * TIB, 2 * MIB, 64, True), (100 * GIB + 512, 4096, 1, False), (1, 65536, 16, False)])
def test_auto_size_is_the_proxmox_ve_patch_formula(size: int, cluster: int, bits: int, extended: bool) -> None:
    assert auto_size_for(size, cluster, bits, extended).cache_size == \
        seed_formula(size, cluster, bits, extended)


@pytest.mark.qemu
def test_auto_size_reads_the_image_header(images: dict[str, Path]) -> None:
    assert auto_size(read_image(images["c64k-1t"], tools=TOOLS)) == AutoSize(160 * MIB, 128 * MIB, 32 * MIB)


@pytest.mark.qemu
def test_auto_size_falls_back_to_size_with_a_warning(images: dict[str, Path]) -> None:
    auto, warnings = auto_size_or_fallback(None, 2 * GIB, "scsi0")
    assert auto == auto_size_for(2 * GIB) and "does not exist yet" in warnings[0]
    auto, warnings = auto_size_or_fallback(read_image(images["c64k-1t"], tools=TOOLS), 2 * GIB, "scsi0")
    assert auto.l2_cache_size == 128 * MIB and "differs from the image's virtual size" in warnings[0]


@pytest.mark.qemu
def test_default_on_a_large_image(images: dict[str, Path]) -> None:
    cache = default_cache(read_image(images["c64k-1t"], tools=TOOLS))
    assert (cache.l2_cache_size, cache.l2_cache_entry_size, cache.refcount_cache_size,
            cache.l2_coverage, cache.cache_clean_interval) == \
        (32 * MIB, 4096, 4 * 65536, 256 * GIB, 600)


@pytest.mark.qemu
def test_default_on_extended_l2(images: dict[str, Path]) -> None:
    cache = default_cache(read_image(images["c2m-extl2"], tools=TOOLS))
    # 16-byte entries: 3 TiB of 2 MiB clusters need 24 MiB, within the 32 MiB default.
    assert (cache.needed_l2_cache_size, cache.l2_cache_size, cache.l2_cache_entry_size,
            cache.l2_coverage) == (24 * MIB, 24 * MIB, 2 * MIB, 3 * TIB)


# Option sets checked against QEMU: refusals with QEMU's message, and accepted sets.
QEMU_CASES = [
    ("c64k-2g", {}),
    ("c64k-2g", {"cache-size": "1M"}),
    ("c64k-2g", {"cache-size": "64M"}),
    ("c64k-2g", {"cache-size": "0"}),
    ("c64k-2g", {"cache-size": "1M", "l2-cache-size": "2M"}),
    ("c64k-2g", {"cache-size": "1M", "refcount-cache-size": "2M"}),
    ("c64k-2g", {"cache-size": "4M", "l2-cache-size": "1M", "refcount-cache-size": "1M"}),
    ("c64k-2g", {"cache-size": "8M", "refcount-cache-size": "1M"}),
    ("c64k-2g", {"l2-cache-size": "1T"}),
    ("c64k-2g", {"l2-cache-entry-size": "128k"}),
    ("c64k-2g", {"l2-cache-entry-size": "3000"}),
    ("c64k-2g", {"l2-cache-entry-size": "256"}),
    ("c64k-2g", {"l2-cache-entry-size": "0x200", "l2-cache-size": "1.5M"}),
    ("c64k-2g", {"cache-clean-interval": "4294967295"}),
    ("c64k-2g", {"cache-clean-interval": "4294967296"}),
    ("c64k-2g", {"cache-clean-interval": "-1"}),
    ("c64k-2g", {"cache-clean-interval": "1.5"}),
    ("c64k-2g", {"cache-clean-interval": "0x10"}),
    ("c64k-2g", {"l2-cache-size": "abc"}),
    ("c64k-2g", {"l2-cache-size": "-1"}),
    ("c64k-2g", {"l2-cache-size": " -0"}),
    ("c64k-2g", {"l2-cache-size": "-5k"}),
    ("c64k-2g", {"refcount-cache-size": "-18446744073709551616"}),
    ("c64k-2g", {"l2-cache-size": "16E"}),
    ("c64k-2g", {"l2-cache-size": "1.5"}),
    ("c64k-2g", {"l2-cache-size": "x", "cache-size": "y", "cache-clean-interval": "z"}),
    ("c64k-2g", {"cache-size": "15E"}),
    ("c64k-2g", {"foo": "1"}),
    ("c64k-2g", {"l2-cache-size": ""}),
    ("c64k-2g", {"cache-size": "1T", "l2-cache-size": "1M"}),
    ("c64k-1t", {"cache-size": "15E", "refcount-cache-size": "0"}),
    ("c64k-1t", {"l2-cache-size": "128M", "l2-cache-entry-size": "512"}),
    ("c512-v2", {"l2-cache-entry-size": "1024"}),
    ("c512-v2", {"cache-size": "3k"}),
    ("c2m-extl2", {"l2-cache-entry-size": "4M"}),
    ("c2m-extl2", {"cache-size": "1G", "refcount-cache-size": "512M"}),
]


@pytest.mark.qemu
@pytest.mark.parametrize(("name", "settings"), QEMU_CASES)
def test_model_agrees_with_qemu(images: dict[str, Path], name: str,
                                settings: dict[str, str]) -> None:
    try:
        # The wording of the QEMU it is compared with (a negative size's changed in 8.1).
        options = parse_cache_options(settings, lambda: qemu_version(TOOLS.qemu_img))
        effective_cache(read_image(images[name], tools=TOOLS), options,
                        allocation_limit=host_allocation_limit())
        model_error = None
    except QemuCacheError as error:
        model_error = error.qemu_message
    assert model_error == qemu_open_error(images[name], settings)


@pytest.mark.qemu
def test_explicit_sizes(images: dict[str, Path]) -> None:
    image = read_image(images["c64k-2g"], tools=TOOLS)  # needs 256 KiB of L2
    capped = effective_cache(image, CacheOptions(l2_cache_size=GIB))
    assert (capped.l2_cache_size, capped.l2_cache_entry_size) == (256 * 1024, 65536)
    # cache-size with refcount-cache-size: L2 gets the rest, not capped at the need.
    uncapped = effective_cache(image, CacheOptions(cache_size=64 * MIB,
                                                   refcount_cache_size=MIB))
    assert uncapped.l2_cache_size == 63 * MIB
    alone = effective_cache(image, CacheOptions(cache_size=64 * MIB))
    assert (alone.l2_cache_size, alone.refcount_cache_size) == (256 * 1024, 64 * MIB - 256 * 1024)
    small = effective_cache(image, CacheOptions(cache_size=200 * 1024))
    assert (small.refcount_cache_size, small.l2_cache_entries, small.l2_cache_entry_size) == \
        (4 * 65536, 2, 4096)


@pytest.mark.qemu
def test_advice(images: dict[str, Path]) -> None:
    image = read_image(images["c64k-1t"], tools=TOOLS)
    notes = advise(image, CacheOptions(), default_cache(image))
    assert "covers 256 GiB of the 1 TiB disk (25%)" in notes[0]
    options = CacheOptions(cache_size=512 * MIB, refcount_cache_size=MIB, l2_cache_entry_size=512)
    notes = advise(image, options, effective_cache(image, options))
    assert any("not capped at the need (128 MiB): 383 MiB of memory wasted" in n for n in notes)
    assert any("every miss scans all of them" in n for n in notes)
    assert any("0 L2 tables allocated" in n for n in notes)
    options = CacheOptions(l2_cache_size=GIB)
    assert any("QEMU caps it silently" in n
               for n in advise(image, options, effective_cache(image, options)))
    options = CacheOptions(cache_size=GIB)
    assert any("to the refcount cache" in n
               for n in advise(image, options, effective_cache(image, options)))


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("512", 512), ("4k", 4096), ("4K", 4096), ("1.5M", 1572864), ("1.M", MIB),
    ("0x1000", 4096), ("2G", 2 * GIB), ("1T", TIB), ("1.0", 1), (" 8", 8), ("+8", 8),
    ("15E", 15 * 2**60), ("8b", 8)])
def test_qemu_size_syntax(text: str, value: int) -> None:
    assert parse_qemu_size("cache-size", text) == value


@pytest.mark.parametrize("text", ["", "-5k", "-1.5", "1.5", "0x10k", "1Mx", "1.5e3", "abc", "0x"])
def test_qemu_size_syntax_errors(text: str) -> None:
    with pytest.raises(QemuCacheError, match="expects a non-negative number below 2"):
        parse_qemu_size("cache-size", text)


@pytest.mark.parametrize(("version", "text", "out_of_range"), [
    ((7, 2, 0), "-1", False), ((7, 2, 0), "-18446744073709551616", True),
    ((8, 1, 0), " -0", True), ((10, 0, 2), "-1", True), (None, "-1", True)])
def test_a_negative_size_in_each_qemu_s_words(version: tuple[int, ...] | None, text: str,
                                              out_of_range: bool) -> None:
    """As QEMU 7.2 and 10.0 say it (test_model_agrees_with_qemu checks the installed one)."""
    message = "is out of range for parameter" if out_of_range else "expects a non-negative number"
    with pytest.raises(QemuCacheError, match=message):
        parse_qemu_size("cache-size", text, None if version is None else lambda: version)


def test_qemu_number_syntax() -> None:
    assert [parse_qemu_number("n", text) for text in ("10", "0x10", "010", "-1")] == \
        [10, 16, 8, 2**64 - 1]
    with pytest.raises(QemuCacheError, match="Parameter 'n' expects a number"):
        parse_qemu_number("n", "08")


def test_drive_cache_options_converts_units() -> None:
    drive = parse_drive("scsi0", "local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=64,"
                        "qcow2-refcount-cache-size=1,qcow2-l2-cache-entry-size=4096,"
                        "qcow2-cache-clean-interval=30").drive
    options = drive_cache_options(drive)
    assert options.as_qemu() == {"l2-cache-size": 64 * MIB, "refcount-cache-size": MIB,
                                 "l2-cache-entry-size": 4096, "cache-clean-interval": 30}


@pytest.mark.qemu
def test_check_drive_cache_uses_the_image(images: dict[str, Path]) -> None:
    image = read_image(images["c512-v2"], tools=TOOLS)
    drive = parse_drive("scsi0", "local:100/x.qcow2,qcow2-l2-cache-entry-size=1024").drive
    [problem] = check_drive_cache(drive, image)
    assert problem.property == "qcow2-l2-cache-entry-size"
    assert "cluster size of" in problem.message and "(512)" in problem.message
    fine = parse_drive("scsi0", "local:100/x.qcow2,qcow2-l2-cache-entry-size=512").drive
    assert check_drive_cache(fine, image) == []
    assert isinstance(problem, Problem)


@pytest.mark.qemu
def test_resolved_cache_options_adds_the_auto_size(images: dict[str, Path]) -> None:
    drive = parse_drive("scsi0", "local:100/x.qcow2,qcow2-cache-size-based-on-disk=1").drive
    options, warnings = resolved_cache_options(drive, read_image(images["c64k-1t"], tools=TOOLS))
    assert (options.cache_size, warnings) == (160 * MIB, [])


@pytest.mark.qemu
def test_check_drive_cache_refuses_an_external_data_file(tmp_path: Path) -> None:
    path = tmp_path / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={tmp_path}/x.data", str(path), "1G"], check=True)
    drive = parse_drive("scsi0", "local:100/x.qcow2,qcow2-l2-cache-entry-size=1024").drive
    assert check_drive_cache(drive, read_image(path, tools=TOOLS)) == [Problem(
        "file", f"{path}: qcow2 image with an external data file ({tmp_path}/x.data) is not "
                "supported (Proxmox VE refuses them)")]

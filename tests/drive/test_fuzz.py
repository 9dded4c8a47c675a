"""Every parser against arbitrary input: VM config files, storage.cfg and drive strings
raise nothing but QdiskError subclasses, and their time grows linearly with the input."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qdisk import storage
from qdisk.config import vmconfig
from qdisk.config.drive import drive_keys, parse_drive, print_drive, schema_of
from qdisk.errors import DriveError, QdiskError
from qdisk.settings import Settings
from qdisk.units import parse_size
from qdisk.vm import store

from cli_helpers import RunQdisk

fuzz = settings(max_examples=150, deadline=None)

# Characters the parsers treat specially, and some they must merely survive.
SYNTAX = "scsi0ide2: ,=;#[]%.-_/\\'\"\t\r\n\f\v\x00\x1c\x85\xa0\u2028\udcffé1e+K"
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
near_syntax = st.text(st.sampled_from(SYNTAX), max_size=80)
texts = st.one_of(any_text, near_syntax)
data = st.one_of(st.binary(max_size=200), texts.map(lambda text: text.encode(errors="surrogatepass")))
VM_CONFIG_LINES = st.sampled_from([
    "memory: 512", "#a%20description", "description: x", "[PENDING]", "delete: scsi0,!ide2",
    "[special:cloudinit]", "[snap1]", "scsi0: local:100/vm-100-disk-0.qcow2,size=1G",
    "cdrom: none,media=cdrom", "", " ", "x", "name:\t", "\xff", "\x00"])
STORAGE_LINES = st.sampled_from([
    "dir: local", "\tpath /var/lib/vz", "\tcontent images,iso", "\tdisable", "lvmthin: thin",
    "\tthinpool data", "", "# comment", "dir: x", "\tpath relative", " ", "\xa0path /x",
    "dir: local\tpath /x", "\tpath", "\xff", "\x00"])


@pytest.fixture(scope="module")
def config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("fuzz-home")
    (home / "qemu-server").mkdir()
    return home


def _lines(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(strategy, texts), max_size=12).map(
        lambda lines: "\n".join(lines).encode(errors="surrogatepass"))


@fuzz
@given(st.one_of(data, _lines(VM_CONFIG_LINES)))
def test_a_vm_config_file_of_any_bytes_raises_only_qdisk_errors(config_home: Path,
                                                                content: bytes) -> None:
    (config_home / "qemu-server" / "100.conf").write_bytes(content)
    try:
        config = store.load(Settings(home=config_home), 100)
    except QdiskError:
        return
    printed = vmconfig.print_vm_config(config)
    # What qdisk writes reads back as itself.
    assert vmconfig.print_vm_config(vmconfig.parse_vm_config(printed, 100)) == printed
    config.merged()
    for key, value in vmconfig.drive_items(config.current.values):
        try:
            parse_drive(key, value)
        except DriveError:
            pass


@fuzz
@given(st.one_of(data, _lines(STORAGE_LINES)))
def test_a_storage_cfg_of_any_bytes_raises_only_qdisk_errors(config_home: Path,
                                                             content: bytes) -> None:
    (config_home / "storage.cfg").write_bytes(content)
    try:
        config = storage.load(Settings(home=config_home))
    except QdiskError:
        return
    assert storage.parse_storage_cfg(storage.print_storage_cfg(config),
                                     config_dir=config.config_dir) == config
    for storage_id in config.storages:
        try:
            storage.resolve(config, f"{storage_id}:100/vm-100-disk-0.raw")
        except QdiskError:
            pass


def _option_values() -> st.SearchStrategy[str]:
    """Values of every kind a property may be given, absurd ones included."""
    return st.one_of(
        texts,
        st.integers().map(str),
        st.integers(-(10**40), 10**40).map(str),
        # More digits than Python's int() converts.
        st.sampled_from(["1" * 5000, "-" + "9" * 5000, "1." + "1" * 5000, "0" * 5000 + "7"]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.from_regex(r"[+-]?[0-9]{0,30}(\.[0-9]{0,30})?([eE][+-]?[0-9]{1,4})?([KMGT](iB)?)?",
                      fullmatch=True),
        st.sampled_from(["nan", "inf", "-0", "1e-320", "953674316.40625", "4294967296", "%00",
                         "%FF", "0x0123456789abcdef", "local:100/x.raw", "none", "cdrom"]))


@st.composite
def drive_strings(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(st.sampled_from(drive_keys()))
    names = sorted(schema_of(key).properties) + ["volume", "bps_rd_length", "cyls", "bogus"]
    parts = [f"{name}={draw(_option_values())}"
             for name in draw(st.lists(st.sampled_from(names), max_size=10))]
    parts.insert(draw(st.integers(0, len(parts))), draw(_option_values()))
    return key, ",".join(parts)


@fuzz
@given(st.one_of(drive_strings(), st.tuples(st.sampled_from(drive_keys() + ("scsi31", "")), texts)))
def test_any_drive_string_raises_only_drive_errors(case: tuple[str, str]) -> None:
    key, text = case
    try:
        drive = parse_drive(key, text).drive
    except DriveError as error:
        assert error.problems and all(problem.property for problem in error.problems) or not key
        return
    assert parse_drive(key, print_drive(drive)).drive == drive


# run_qdisk keeps no state between calls (it empties the captured output first).
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts)
def test_drive_parse_answers_any_text_with_exit_0_or_2(run_qdisk: RunQdisk, text: str) -> None:
    result = run_qdisk("drive", "parse", "--json", text)
    assert result.exit_code in (0, 2), result.stderr
    assert "internal error" not in result.stderr


# --- linear time -------------------------------------------------------------------------

# Enough characters that a quadratic parser would be slow and obvious (8x the input would
# take 64x the time); a linear one takes about 8x, and the bound leaves room for noise.
SMALL = 4_000
GROWTH = 8
MAX_RATIO = 30

SHAPES = [" ", "\t", ",", "=", "\\", "'", '"', "k", "a=", ",a", "a ", " a", "1", ".", ":", "%",
          "a:", "1e", "[", "#"]
STORAGE = storage.parse_storage_cfg("dir: local\n\tpath /x\n")


def _drive_line(run_qdisk: RunQdisk) -> Callable[[str], object]:
    return lambda run: run_qdisk("drive", "parse", f"scsi0: /a{run}b,serial={run}")


PARSERS: dict[str, Callable[[str], object]] = {
    "drive value": lambda run: parse_drive("scsi0", f"/a{run}b,size={run},{run}=1,mbps={run}"),
    "vm config value": lambda run: vmconfig.parse_vm_config(f"scsi0: /a{run}b{run}\n", 100),
    "vm config key": lambda run: vmconfig.parse_vm_config(f"a{run}: x\n[{run}\n", 100),
    "vm config description": lambda run: vmconfig.parse_vm_config(
        f"description:{run}\n#{run}\nmemory:{run}\n", 100),
    "storage.cfg option": lambda run: storage.parse_storage_cfg(f"dir: local\n\tpath /x{run}\n"
                                                                f"\tk{run}v{run}\n"),
    "storage.cfg section": lambda run: storage.parse_storage_cfg(f"dir{run}: a{run}\n"),
    "size": lambda run: parse_size(f"1{run}1.1{run}G"),
    "allocation": lambda run: storage.parse_allocation(f"local:1{run}1.5"),
    "volume": lambda run: storage.resolve(STORAGE, f"local:1/{run}.raw/1/a{run}b.qcow2"),
}


def _seconds(parse: Callable[[str], object], text: str) -> float:
    """The best of a few runs: the machine is shared, a pause must not count."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        try:
            parse(text)
        except QdiskError:
            pass
        best = min(best, time.perf_counter() - start)
    return best


CASES = [(name, shape) for name in [*PARSERS, "drive parse (CLI)"] for shape in SHAPES]


@pytest.mark.parametrize(("parser", "shape"), CASES)
def test_parsing_time_grows_linearly(run_qdisk: RunQdisk, parser: str, shape: str) -> None:
    parse = _drive_line(run_qdisk) if parser == "drive parse (CLI)" else PARSERS[parser]
    small = _seconds(parse, shape * (SMALL // len(shape)))
    large = _seconds(parse, shape * (GROWTH * SMALL // len(shape)))
    assert large < MAX_RATIO * small, f"{GROWTH}x the input took {large / small:.0f}x the time"

"""Classifying drive changes and the state file, without QEMU (a change that waits or is
only recorded never talks to QEMU)."""

from __future__ import annotations

import pytest

from qdisk import storage
from qdisk.config.drive import parse_drive
from qdisk.config.vmconfig import Section, VmConfig
from qdisk.qemu.command import build_command, parse_version
from qdisk.vm.live import LiveOutcome, apply_drive_change, classify, initial_state

from live_helpers import VMID, LiveHome

FILE = "local:100/vm-100-disk-0.qcow2"


def test_classify_sorts_changed_keys_by_how_a_running_vm_takes_them() -> None:
    old = parse_drive("scsi0", f"{FILE},mbps=10,aio=native,backup=1,serial=a").drive
    new = parse_drive("scsi0", f"{FILE},iops=5,aio=native,backup=0,serial=b,"
                               "qcow2-l2-cache-size=8,detect_zeroes=0").drive
    change = classify(old, new)
    assert change.cache == {"qcow2-l2-cache-size"}
    assert change.throttle == {"mbps", "iops"}
    assert change.config_only == {"backup"}
    assert change.pending == {"serial", "detect_zeroes"}


@pytest.mark.parametrize("extra, messages", [
    ("aio=threads", ["scsi0.aio: takes effect at the next start"]),
    ("cache=writeback,qcow2-l2-cache-size=8,mbps=3", [
        "scsi0.cache: takes effect at the next start",
        "scsi0: mbps, qcow2-l2-cache-size: also wait for the next start (the drive has changes "
        "that cannot be applied live)"]),
])
def test_one_key_that_cannot_change_live_keeps_the_whole_drive_pending(
        live_home: LiveHome, extra: str, messages: list[str]) -> None:
    old = parse_drive("scsi0", FILE).drive
    new = parse_drive("scsi0", f"{FILE},{extra}").drive
    result = apply_drive_change(live_home.settings, VMID, old, new, live_home.storage_config)
    assert result.outcome is LiveOutcome.PENDING
    assert list(result.messages) == messages


def test_keys_qemu_never_sees_are_config_only(live_home: LiveHome) -> None:
    old = parse_drive("scsi0", FILE).drive
    new = parse_drive("scsi0", f"{FILE},backup=0,size=4G").drive
    result = apply_drive_change(live_home.settings, VMID, old, new, live_home.storage_config)
    assert result.outcome is LiveOutcome.CONFIG_ONLY
    assert result.messages == ("scsi0.backup: recorded (QEMU does not use it)",
                               "scsi0.size: recorded (QEMU does not use it)")


def test_no_change_is_live_and_says_nothing(live_home: LiveHome) -> None:
    drive = parse_drive("scsi0", FILE).drive
    result = apply_drive_change(live_home.settings, VMID, drive, drive, live_home.storage_config)
    assert (result.outcome, result.messages) == (LiveOutcome.LIVE, ())


@pytest.mark.qemu
def test_initial_state_records_the_qcow2_nodes_qdisk_named(live_home: LiveHome) -> None:
    live_home.create_qcow2("base.qcow2", "1T")
    chain = live_home.create_qcow2("vm-100-disk-0.qcow2", "1T", "-b", "base.qcow2", "-F", "qcow2")
    raw = live_home.create_qcow2("vm-100-disk-1.raw", "1M")
    config = VmConfig(VMID, current=Section({
        "scsi0": f"{chain},qcow2-cache-size-based-on-disk=1",
        "scsi1": f"{chain},qcow2-l2-cache-size=8", "scsi2": raw}))
    settings = live_home.settings
    command = build_command(config, storage.load(settings), settings,
                            qemu_version=lambda: parse_version("7.2"))

    state = initial_state(command.syntax, command.graphs, 4242).as_json()

    assert (state["syntax"], state["pid"], sorted(state["disks"])) == \
        ("drive", 4242, ["scsi0", "scsi1"])
    top, base = state["disks"]["scsi0"]["nodes"]
    assert top["filename"].endswith("vm-100-disk-0.qcow2") and base["filename"].endswith("base.qcow2")
    # 1 TiB: 128 MiB of L2 and 32 MiB of refcounts per image.
    assert top["cache"] == base["cache"] == {"cache-size": 160 * 2**20}
    # Without the auto size QEMU opens the backing image itself: only the top is qdisk's.
    assert [node["cache"] for node in state["disks"]["scsi1"]["nodes"]] == \
        [{"l2-cache-size": 8 * 2**20}]

"""The reopen plan on running chains as QEMU reports them (no QEMU needed): what is
reopened in place under the running names, what is replaced, what is left as it is."""

from __future__ import annotations

from typing import Any

import pytest

from qdisk.qemu.reopen import AppliedNode, NotLive, RunningLevel, plan_reopen

CACHE = {"direct": True, "no-flush": False}


def node(name: str, filename: str, *, backing: dict[str, Any] | None = None,
         **options: Any) -> dict[str, Any]:
    """A format node as qdisk's graph builds it (qemu-server's options)."""
    built = {"driver": "qcow2", "node-name": name, "read-only": False, "cache": CACHE,
             "discard": "ignore", "detect-zeroes": "on", **options,
             "file": {"driver": "file", "node-name": "e" + name[1:], "filename": filename}}
    if backing is not None:
        built["backing"] = backing
    return built


def level(name: str, filename: str, **changed: Any) -> RunningLevel:
    facts: dict[str, Any] = {"read_only": False, "detect_zeroes": "on", "cache": CACHE, **changed}
    return RunningLevel(name, "#file-of-" + name, filename, "qcow2", **facts)


def test_levels_are_reopened_under_the_names_qemu_reports() -> None:
    wanted = node("fqdisk", "/img/top.qcow2", **{"l2-cache-size": 8 << 20})
    plan = plan_reopen("scsi0", wanted, [level("fqemuserver", "/img/top.qcow2")],
                       [AppliedNode("fqemuserver", "/img/top.qcow2")], replace_qemu_levels=False)
    [options] = plan.options
    assert (options["node-name"], options["file"], options["l2-cache-size"]) == \
        ("fqemuserver", "#file-of-fqemuserver", 8 << 20)
    assert plan.chain == ["fqemuserver"] and plan.added is None
    assert plan.applied_nodes == [AppliedNode("fqemuserver", "/img/top.qcow2",
                                              {"l2-cache-size": 8 << 20})]


def test_backing_images_qemu_opened_are_replaced_only_for_the_auto_size() -> None:
    base = node("fbase", "/img/base.qcow2", **{"read-only": True, "cache-size": 5 << 20})
    wanted = node("ftop", "/img/top.qcow2", backing=base, **{"cache-size": 6 << 20})
    running = [level("ftop", "/img/top.qcow2"), level("#block12", "/img/base.qcow2", read_only=True)]

    replaced = plan_reopen("scsi0", wanted, running, [], replace_qemu_levels=True)
    kept = plan_reopen("scsi0", wanted, running, [], replace_qemu_levels=False)

    assert replaced.added == base and replaced.chain == ["ftop", "fbase"]
    assert replaced.options[0]["backing"] == "fbase"
    assert kept.added is None and kept.chain == ["ftop", "#block12"]
    assert kept.options[0]["backing"] == "#block12"
    assert [applied.node_name for applied in kept.applied_nodes] == ["ftop"]


@pytest.mark.parametrize("running, message", [
    ([level("#block3", "/img/top.qcow2")],
     "scsi0: QEMU named the disk's node itself (#block3: a VM started with -drive) and cannot "
     "reopen such a node"),
    ([level("ftop", "/img/top.qcow2", detect_zeroes="unmap")],
     "scsi0: node ftop (/img/top.qcow2) runs with detect-zeroes 'unmap' (the config gives "
     "'on'): a reopen would change that"),
    ([level("ftop", "/img/other.qcow2")],
     "scsi0: QEMU runs qcow2 image /img/other.qcow2 (node ftop) where the config's chain has "
     "qcow2 image /img/top.qcow2"),
    ([level("ftop", "/img/top.qcow2"), level("#block4", "/img/base.qcow2")],
     "scsi0: the running backing chain has 2 images, the image's header 1"),
])
def test_a_node_that_cannot_be_reopened_safely_is_left_with_the_reason(
        running: list[RunningLevel], message: str) -> None:
    with pytest.raises(NotLive) as error:
        plan_reopen("scsi0", node("ftop", "/img/top.qcow2"), running, [],
                    replace_qemu_levels=True)
    assert str(error.value) == message

"""The qcow2 options qdisk gives QEMU are the cache options of QEMU's own qcow2 driver, as
the running QEMU describes them (its QMP schema), not as qdisk's table says."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdisk.cache.options import QEMU_OPTION_NAMES
from qdisk.qemu.qmp import QmpConnection


@pytest.mark.qemu
def test_the_qemu_names_are_the_cache_options_of_qemus_qcow2_driver(paused_qemu: Path) -> None:
    with QmpConnection(paused_qemu) as qmp:
        schema = qmp.execute("query-qmp-schema")
    # BlockdevOptionsQcow2 (introspection hides type names): the object with qcow2's own keys.
    [qcow2] = [entry for entry in schema if entry.get("meta-type") == "object"
               and {"lazy-refcounts", "overlap-check"} <= {member["name"]
                                                          for member in entry["members"]}]
    members = {member["name"]: member["type"] for member in qcow2["members"]}
    assert {name for name in members if "cache" in name} == set(QEMU_OPTION_NAMES)
    assert {members[name] for name in QEMU_OPTION_NAMES} == {"int"}

"""No lost or torn configs: parallel `set` commands on one VM all land, and a `set` killed
with SIGKILL at any moment leaves the old or the new config, never a torn or empty one."""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from qdisk.cli import main
from qdisk.config.vmconfig import parse_vm_config

from cli_helpers import QDISK, RunQdisk

# Ten distinct keys and a valid value for each.
PARALLEL_CHANGES = {
    "name": "parallel", "memory": "96", "cores": "2", "sockets": "2", "machine": "q35",
    "scsihw": "virtio-scsi-pci", "ostype": "l26", "onboot": "1", "kvm": "0", "tags": "a;b",
}


def test_parallel_sets_with_distinct_keys_all_land(vm_home: Path, run_qdisk: RunQdisk,
                                                   config_file: Path) -> None:
    assert run_qdisk("vm", "create", "100", "--description", "start").exit_code == 0
    processes = [subprocess.Popen([QDISK, "vm", "set", "100", f"--{key}", value],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for key, value in PARALLEL_CHANGES.items()]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr

    config = parse_vm_config(config_file.read_text(), 100)
    assert config.current.values == PARALLEL_CHANGES
    assert config.current.description == "start"


def _set_in_child(description: str) -> int:
    """Fork a child that runs `qdisk vm set` in this (already imported) interpreter, so the
    child spends its life in the set itself and a kill lands anywhere in it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                code = main(["vm", "set", "100", "--description", description])
        finally:
            os._exit(1)
        os._exit(code)  # not reached: the finally exits
    return pid


def test_set_killed_at_any_moment_leaves_old_or_new_config(vm_home: Path, run_qdisk: RunQdisk,
                                                           config_file: Path) -> None:
    # A big config so that writing it takes a while.
    drives = [f"--scsi{index}" for index in range(20)]
    arguments = [part for drive in drives for part in (drive, "none,media=cdrom")]
    assert run_qdisk("vm", "create", "100", "--memory", "64", *arguments).exit_code == 0
    # How long an unkilled set takes here: the kills are spread over about that time.
    window = 0.0
    for _ in range(3):
        began = time.perf_counter()
        os.waitpid(_set_in_child("warmup"), 0)
        window = max(window, time.perf_counter() - began)
    rng = random.Random(5)
    outcomes = {"old": 0, "new": 0}
    mid_write = 0
    deadline = time.monotonic() + 30
    iteration = 0
    while time.monotonic() < deadline and iteration < 300:
        iteration += 1
        if iteration % 25 == 0:
            # A loaded machine makes sets slower or faster than the warm-up: widen the
            # window while no kill came after the rename, narrow it while none came before.
            window *= 2 if not outcomes["new"] else 0.5 if not outcomes["old"] else 1
        before = config_file.read_text()
        description = f"run {iteration} " + "x" * rng.randrange(1000, 6000)
        child = _set_in_child(description)
        time.sleep(rng.uniform(0, window * 1.2))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        # A write killed before its rename leaves its temporary file, until the next
        # command on the VM removes it.
        mid_write += bool(list(config_file.parent.glob(".100.conf.*.tmp")))

        after = config_file.read_text()
        assert after, f"iteration {iteration}: empty config"
        config = parse_vm_config(after, 100)
        assert not config.warnings
        if after == before:
            outcomes["old"] += 1
        else:
            assert config.current.description == description, f"iteration {iteration}: torn"
            assert not config.pending.values and config.pending.description is None
            assert config.current.values["memory"] == "64"
            assert len([key for key in config.current.values if key.startswith("scsi")]) == 20
            outcomes["new"] += 1
    # The kills landed before and after the rename, not all on one side, and in the middle
    # of writing.
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
    assert mid_write, "no kill landed mid-write"
    assert run_qdisk("vm", "set", "100", "--name", "clean").exit_code == 0
    assert not list(config_file.parent.glob(".100.conf.*.tmp"))

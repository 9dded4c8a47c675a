"""qdisk as an administrator installs it: the Debian packages in a fresh Debian 13 root.

The command is /usr/bin/qdisk and the library /usr/lib/python3/dist-packages/qdisk, from
the package (the checkout's src/ is not on any path). The Proxmox VE host is the root
itself: /etc/pve, the storages and /var/run/qemu-server, with a QEMU 10 VM started with
qemu-server's arguments. The tests run in file order: the package is removed last."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from conftest import CHECKOUT

from pve_helpers import GIB, MIB, NOISE, THIS_NODE, PveTree, make_tree, vm_size

UNITS = ("qdisk-serve.service", "qdisk-agent.service")
UNIT_DIR = Path("/usr/lib/systemd/system")
SITE = Path("/usr/lib/python3/dist-packages")
VERSION = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
# QEMU's L2 cache of an image of 256 GiB or more when no option is given.
DEFAULT_L2 = 32 * MIB


def run(*argv: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    return result


def qdisk(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The installed command, found on PATH as a shell would; this node is pve1."""
    return run("qdisk", *args, env={"QDISK_PVE_NODE": THIS_NODE}, check=check)


def test_qdisk_is_the_installed_package() -> None:
    assert shutil.which("qdisk") == "/usr/bin/qdisk"
    assert run("dpkg-query", "-S", "/usr/bin/qdisk").stdout.startswith("qdisk: ")
    assert qdisk("--version").stdout == f"qdisk, version {VERSION}\n"
    where = run("python3", "-c", "import qdisk, qemu.qmp; print(qdisk.__file__, qemu.qmp.__file__)")
    assert [Path(path).is_relative_to(SITE) for path in where.stdout.split()] == [True, True]
    # Nothing came from pip: no pip, nothing in /usr/local.
    assert shutil.which("pip") is None and shutil.which("pip3") is None
    assert not list(Path("/usr/local/lib").glob("python3*/dist-packages/*"))


def command_paths(group: click.Group, prefix: str = "") -> Iterator[str]:
    for name, command in group.commands.items():
        if command.hidden:
            continue
        yield prefix + name
        if isinstance(command, click.Group):
            yield from command_paths(command, f"{prefix}{name} ")


def test_the_man_page_renders_and_lists_every_command() -> None:
    from qdisk.cli import cli

    page = run("man", "qdisk", env={"MANPAGER": "cat", "MANWIDTH": "200"}).stdout
    assert page.startswith("QDISK(1)")
    paths = list(command_paths(cli))
    assert {"pve audit", "pve set", "serve", "vm start"} <= set(paths)
    missing = [path for path in paths if not re.search(rf"^\s*qdisk {path} \[OPTIONS\]", page, re.M)]
    assert missing == [], f"commands missing from qdisk(1): {missing}"


def test_bash_completion_completes_the_commands() -> None:
    script = ("source /usr/share/bash-completion/completions/qdisk; "
              "COMP_WORDS=(qdisk pve au); COMP_CWORD=2; _qdisk_completion qdisk; "
              'printf "%s\\n" "${COMPREPLY[@]}"')
    assert run("bash", "-c", script).stdout.split() == ["audit"]


def test_the_units_verify_and_are_not_enabled() -> None:
    result = run("systemd-analyze", "verify", *(str(UNIT_DIR / unit) for unit in UNITS),
                 check=False)
    assert (result.returncode, result.stderr) == (0, "")
    for unit in UNITS:
        assert run("systemctl", "is-enabled", unit, check=False).stdout == "disabled\n"
    serve = (UNIT_DIR / "qdisk-serve.service").read_text()
    assert ("ExecStart=/usr/bin/qdisk serve --pve --listen 0.0.0.0:8106 "
            "--tls-cert /etc/pve/local/pve-ssl.pem --tls-key /etc/pve/local/pve-ssl.key") in serve
    assert "ExecStart=/usr/bin/qdisk pve agent\n" in (UNIT_DIR / "qdisk-agent.service").read_text()


def test_the_hookscript_is_the_one_qdisk_prints() -> None:
    snippet = Path("/usr/share/qdisk/qdisk-hook.sh")
    assert os.access(snippet, os.X_OK)
    assert snippet.read_text() == qdisk("pve", "hook", "--print-snippet").stdout
    assert "'/usr/bin/qdisk' pve hook" in snippet.read_text()


@pytest.fixture(scope="module")
def host() -> Iterator[PveTree]:
    """This root as a Proxmox VE node (pve1 of two): /etc/pve, storages, VM configs."""
    tree = make_tree(Path("/"))
    try:
        yield tree
    finally:
        tree.kill_all()


def audit() -> dict[str, Any]:
    return dict(json.loads(qdisk("pve", "audit", "--json").stdout))


def scsi0(data: dict[str, Any]) -> dict[str, Any]:
    vm = next(vm for node in data["nodes"] for vm in node["vms"] if vm["vmid"] == 100)
    return next(disk for disk in vm["disks"] if disk["key"] == "scsi0")


def test_pve_audit_and_set_reach_a_running_qemu_10(host: PveTree) -> None:
    version = run("qemu-system-x86_64", "--version").stdout
    assert re.match(r"QEMU emulator version 10\.", version), version
    proxmox_files = host.proxmox_files()
    pid = host.start(100)
    before = vm_size(pid)

    disk = scsi0(audit())
    assert (disk["cache-source"], disk["layers"][0]["l2-cache-size"]) == ("default", DEFAULT_L2)

    result = qdisk("pve", "set", "100", "--scsi0", "qcow2-l2-cache-size=4096")
    assert "qcow2 cache l2-cache-size 4 GiB applied live" in result.stdout
    # QEMU reports cache sizes nowhere: its address space grows by the new L2 cache.
    grown = vm_size(pid) - before
    assert 4 * GIB - DEFAULT_L2 - NOISE < grown < 4 * GIB - DEFAULT_L2 + NOISE, grown
    disk = scsi0(audit())
    assert (disk["cache-source"], disk["layers"][0]["l2-cache-size"]) == ("applied", 4 * GIB)
    assert host.settings_path(100).read_text().splitlines()[1:] == ["scsi0: qcow2-l2-cache-size=4096"]
    assert host.proxmox_files() == proxmox_files


def test_the_agent_units_command_gives_a_restarted_vm_its_settings(host: PveTree) -> None:
    """qdisk-agent.service's command, one cycle: QEMU started anew (as qemu-server would,
    with QEMU's default caches) gets the stored settings, without a hookscript."""
    host.kill_all()
    pid = host.start(100)
    before = vm_size(pid)

    result = qdisk("pve", "agent", "--once")

    assert "VM 100: " in result.stdout, result.stdout
    grown = vm_size(pid) - before
    assert 4 * GIB - DEFAULT_L2 - NOISE < grown < 4 * GIB - DEFAULT_L2 + NOISE, grown


# systemd cannot run as PID 1 in this root: a systemctl that records what it is asked
# stands in for it, behind Debian's own deb-systemd-invoke, which the maintainer scripts
# call. qdisk-serve is enabled and running, qdisk-agent neither.
RECORDING_SYSTEMCTL = """#!/bin/sh
echo "$*" >> /run/systemctl.log
case "$*" in
    *is-enabled*qdisk-serve.service*) echo enabled ;;
    *is-enabled*) echo disabled; exit 1 ;;
    *is-active*qdisk-serve.service*) ;;
    *is-active*) exit 3 ;;
esac
"""


def test_upgrade_restarts_running_units_removal_stops_them_and_leaves_etc_pve(host: PveTree) -> None:
    deb = os.environ["QDISK_DEB"]
    cluster_files = {path: path.read_bytes() for path in host.pve.rglob("*") if path.is_file()}
    assert host.settings_path(100) in cluster_files
    run("dpkg-divert", "--local", "--rename", "--divert", "/usr/bin/systemctl.real",
        "--add", "/usr/bin/systemctl")
    systemctl = Path("/usr/bin/systemctl")
    systemctl.write_text(RECORDING_SYSTEMCTL)
    systemctl.chmod(0o755)
    Path("/run/systemd/system").mkdir(parents=True, exist_ok=True)
    log = Path("/run/systemctl.log")

    run("apt-get", "install", "-y", "--reinstall", deb)
    asked = log.read_text().splitlines()
    assert [line for line in asked if re.search(r"\b(restart|start|stop)\b", line)] == \
        ["--quiet --system restart qdisk-serve.service"], asked

    log.unlink()
    run("apt-get", "remove", "-y", "qdisk")
    assert [line for line in log.read_text().splitlines() if " stop " in f" {line} "] == \
        ["stop qdisk-agent.service qdisk-serve.service"], log.read_text()
    assert not Path("/usr/bin/qdisk").exists()
    run("apt-get", "purge", "-y", "qdisk")
    assert {path: path.read_bytes() for path in host.pve.rglob("*") if path.is_file()} == cluster_files

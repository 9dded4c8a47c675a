"""`qdisk token` and `qdisk serve`: tokens stored hashed, the listen address checked, and
a client nobody here wrote (proxmoxer) driving the server over TLS."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import proxmoxer
import pytest

from qdisk.web.http import node_name

from cli_helpers import QDISK, RunQdisk
from web_helpers import (
    SERVING_RE,
    VMID,
    WebHome,
    make_certificate,
    make_web_home,
    serving_process,
    stop_every_vm,
)


def test_a_token_is_printed_once_and_kept_only_as_a_hash(run_qdisk: RunQdisk, home: Path) -> None:
    result = run_qdisk("token", "create", "automation")
    assert result.exit_code == 0, result.stderr
    line = result.stdout.strip()
    assert "\n" not in line
    token_id, secret = line.split("=")
    assert token_id == "root@pam!automation" and len(secret) == 36
    token_file = home / "priv" / "tokens.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert secret not in token_file.read_text()
    assert json.loads(token_file.read_text())["root@pam!automation"]["read-only"] is False
    assert run_qdisk("token", "create", "viewer", "--read-only").exit_code == 0
    listing = run_qdisk("token", "list").stdout
    assert "root@pam!automation  read-write" in listing and "root@pam!viewer  read-only" in listing
    assert secret not in listing
    taken = run_qdisk("token", "create", "automation")
    assert (taken.exit_code, taken.stderr) == (
        2, "qdisk: token 'root@pam!automation' already exists (remove it first)\n")
    for bad_name in ("1st", "a", "with space", "x" * 65, "semi;colon"):
        assert run_qdisk("token", "create", bad_name).exit_code == 2
    assert run_qdisk("token", "create", "ok", "--user", "nobody").exit_code == 2
    assert run_qdisk("token", "remove", "automation").stdout == "removed root@pam!automation\n"
    assert "automation" not in run_qdisk("token", "list").stdout
    assert run_qdisk("token", "remove", "automation").exit_code == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "0.0.0.0:0"], "not a loopback address: give --tls-cert and --tls-key"),
    (["--listen", "nonsense"], "expected HOST:PORT"),
    (["--listen", "127.0.0.1:70000"], "expected HOST:PORT"),
    (["--tls-cert", "/etc/hostname"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"], "cannot be used"),
])
def test_serve_refuses_what_it_cannot_serve_safely(run_qdisk: RunQdisk, home: Path,
                                                   args: list[str], message: str) -> None:
    result = run_qdisk("serve", *args)
    assert result.exit_code in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def served_over_tls(tmp_path: Path) -> Iterator[tuple[WebHome, str, Path]]:
    """`qdisk serve` as a process, over TLS on a free port: (home, URL, certificate)."""
    web_home = make_web_home(tmp_path)
    tls = make_certificate(tmp_path)
    try:
        with serving_process(["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
                             {"QDISK_HOME": str(web_home.settings.home), "QDISK_ACCEL": "tcg"}) as (url, _):
            yield web_home, url, tls.cert
    finally:
        stop_every_vm(web_home.settings)


@pytest.mark.qemu
def test_proxmoxer_lists_reads_and_sets_a_qcow2_option_over_tls(
        served_over_tls: tuple[WebHome, str, Path]) -> None:
    web_home, url, certificate = served_over_tls
    host, port = url.removeprefix("https://").rsplit(":", 1)
    user, token = web_home.admin_token.split("!")
    token_name, token_value = token.split("=")
    proxmox = proxmoxer.ProxmoxAPI(host, port=int(port), user=user, token_name=token_name,
                                   token_value=token_value, verify_ssl=str(certificate))
    node = proxmox.nodes(node_name())
    assert node.qemu.get() == [{"vmid": VMID, "name": "db", "status": "stopped"}]
    vm = node.qemu(VMID)
    config = vm.config.get()
    disk = config["scsi0"]
    assert "qcow2-cache-size-based-on-disk=1" in disk
    changed = disk.replace("qcow2-cache-size-based-on-disk=1", "qcow2-l2-cache-size=64")
    vm.config.put(scsi0=changed, digest=config["digest"])
    assert "qcow2-l2-cache-size=64" in vm.config.get()["scsi0"]
    assert "qcow2-l2-cache-size=64" in web_home.config_file.read_text()
    with pytest.raises(proxmoxer.ResourceException) as refused:
        vm.config.put(scsi0=f"{changed},qcow2-l2-cache-entry-size=1000")
    assert refused.value.status_code == 400
    assert "must be a power of two" in refused.value.errors["scsi0"]
    with pytest.raises(proxmoxer.ResourceException) as stale:
        vm.config.put(memory=128, digest=config["digest"])
    assert "detected modified configuration" in stale.value.errors["digest"]
    plan = vm("qcow2-cache").get()
    assert plan["disks"][0]["layers"][0]["configured"]["coverage-percent"] == 50.0
    # Close the keep-alive TLS connection, as a client that is done does: the server's
    # shutdown would otherwise wait for it (GRACEFUL_SHUTDOWN_SECONDS). The tracebacks
    # of the refusals hold on to their responses, and so to the connection.
    del refused, stale
    proxmox._store["session"].close()


def test_serve_without_any_token_says_how_to_make_one(home: Path) -> None:
    process = subprocess.Popen([QDISK, "serve", "--listen", "127.0.0.1:0"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "QDISK_HOME": str(home)})
    try:
        assert process.stdout is not None and process.stderr is not None
        assert SERVING_RE.match(process.stdout.readline())
        assert "qdisk token create NAME" in process.stderr.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

"""Helpers of the web tests: a QDISK_HOME with a VM and tokens, the server in a thread,
an API client, a TLS certificate."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from qdisk import storage
from qdisk.pve.host import PveHost
from qdisk.settings import Settings, Tools
from qdisk.system.layout import PveLayout
from qdisk.vm import changes, state, store
from qdisk.web import tokens
from qdisk.web.http import node_name
from qdisk.web.server import ConnectionLimits, ListenAddress, TlsFiles, listen, make_server

from access_helpers import AccessTree, KeyPair, install_access, make_key_pair
from cli_helpers import QDISK
from pve_helpers import THIS_NODE, PveTree, make_tree
from qemu_helpers import kill_and_wait

VMID = 100
# A thin 1 TiB qcow2 disk with the automatic cache, and a small raw disk.
QCOW2_DISK = "local:1024,format=qcow2,cache=none,discard=on,iothread=1,qcow2-cache-size-based-on-disk=1"
RAW_DISK = "local:0.01,format=raw"
SERVER_START_TIMEOUT = 30.0
# What `qdisk serve` prints once it listens.
SERVING_RE = re.compile(r"qdisk: serving the page and the API \(/api2/json\) at (https?://\S+)/ \((.*)\)$")


@dataclass(frozen=True)
class WebHome:
    """A QDISK_HOME with VM 100 (scsi0 qcow2, scsi1 raw) and two tokens."""

    settings: Settings
    admin_token: str
    reader_token: str

    @property
    def config_file(self) -> Path:
        return store.config_path(self.settings, VMID)


def make_web_home(root: Path) -> WebHome:
    settings = Settings(home=root / "qdisk-home", tools=Tools())
    storage.ensure_default(settings)
    changes.create(settings, VMID, {"name": "db", "memory": "64", "scsihw": "virtio-scsi-single",
                               "scsi0": QCOW2_DISK, "scsi1": RAW_DISK})
    return WebHome(settings, tokens.create(settings, "admin"),
                   tokens.create(settings, "reader", read_only=True))


PVE_SECRET = "0b7f6c1e-2d3a-4e5f-8a9b-0c1d2e3f4a5b"
# The host's own users, as `qdisk serve --pve` takes them: root@pam's API token, and an
# auditor's privilege-separated one (PVEAuditor on /vms).
PVE_USERS = ("user:root@pam:1:0:::::\n"
             "token:root@pam!admin:0:0::\n"
             "user:auditor@pve:1:0:::::\n"
             "token:auditor@pve!ro:0:1::\n"
             "acl:1:/:auditor@pve:PVEAuditor:\n"
             "acl:1:/vms:auditor@pve!ro:PVEAuditor:\n")


@dataclass(frozen=True)
class PveHome:
    """tests/pve's simulated host (``tree``, served as ``host``) with Proxmox VE's own users
    and API tokens (``admin_token``: root@pam's, ``reader_token``: an auditor's), ``key``
    signing its login tickets, and a QDISK_HOME (``settings``), as `qdisk serve --pve`
    runs on a node."""

    tree: PveTree
    host: PveHost
    settings: Settings
    admin_token: str
    reader_token: str
    access: AccessTree
    key: KeyPair


def make_pve_home(root: Path, users: str = PVE_USERS, tokens: tuple[str, ...] = ()) -> PveHome:
    """``users``: the host's user.cfg, whose ``tokens`` (besides root@pam!admin and
    auditor@pve!ro) have the secret PVE_SECRET."""
    tree = make_tree(root / "root")
    key = make_key_pair(root / "keys", "authkey")
    secrets = dict.fromkeys(("root@pam!admin", "auditor@pve!ro", *tokens), PVE_SECRET)
    access = install_access(tree.root, key, users, secrets)
    return PveHome(tree, PveHost(PveLayout(tree.root, THIS_NODE), Tools()),
                   Settings(home=root / "qdisk-home", tools=Tools()),
                   f"root@pam!admin={PVE_SECRET}", f"auditor@pve!ro={PVE_SECRET}", access, key)


def stop_every_vm(settings: Settings) -> None:
    """Kill the QEMU of every VM of the home that still runs, and wait until it is gone."""
    for vmid in store.list_vmids(settings):
        pid = state.running_pid(settings, vmid)
        if pid is not None:
            kill_and_wait(pid)


@contextlib.contextmanager
def running_server(settings: Settings, tls: TlsFiles | None = None, *,
                   pve: PveHost | None = None,
                   limits: ConnectionLimits = ConnectionLimits()) -> Iterator[str]:
    """The whole application (``pve``: over that Proxmox VE host) served by uvicorn in a
    thread on a free loopback port; yields its URL. Stopped (and the home's VMs killed) on
    the way out, whatever happened."""
    listener = listen(ListenAddress("127.0.0.1", 0), tls)
    # VMs started through the server run under TCG: no guest needs KVM here.
    server = make_server(dataclasses.replace(settings, accel="tcg"), listener, pve=pve,
                         limits=limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener.sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield listener.url.rstrip("/")
    finally:
        server.should_exit = True
        thread.join(SERVER_START_TIMEOUT)
        listener.sock.close()
        stop_every_vm(settings)


@contextlib.contextmanager
def serving_process(args: list[str], env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """`qdisk serve --listen 127.0.0.1:0 ARGS` as a process with ``env`` added; yields its
    URL and what it says it serves. Stopped with SIGTERM, or killed, whatever happened."""
    process = subprocess.Popen([QDISK, "serve", "--listen", "127.0.0.1:0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **env})
    try:
        assert process.stdout is not None
        match = SERVING_RE.match(process.stdout.readline().rstrip("\n"))
        assert match is not None, process.stderr.read() if process.stderr else ""
        yield match.group(1), match.group(2)
        # uvicorn shuts down gracefully, then dies of the signal it caught, as asked.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class Api:
    """``requests`` against ``/api2/json`` with a token (or none): ``api.get("/nodes")``."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"PVEAPIToken={token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/api2/json{path}", timeout=120, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)


def vm_path(suffix: str = "") -> str:
    return f"/nodes/{node_name()}/qemu/{VMID}{suffix}"


def make_certificate(directory: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 (what the client is told to trust)."""
    tls = TlsFiles(directory / "cert.pem", directory / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tls.key), "-out", str(tls.cert)],
                   check=True, capture_output=True)
    return tls

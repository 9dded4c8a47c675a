"""`qdisk serve --pve`: the API and the page over tests/pve's simulated Proxmox VE host,
with VM 100 run by QEMU as qemu-server starts it (paused, under TCG). The endpoints give
what `qdisk pve audit` and `qdisk pve set` give; a change reaches the running QEMU at once;
Proxmox VE's own files are never written; QDISK_HOME's VM endpoints answer 501. Who asks is
one of the host's own users (its user.cfg, token.cfg and keys): root@pam's API token, or an
auditor's privilege-separated token; the page opens logged in through a ticket cookie."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import proxmoxer
import pytest
import requests
from playwright.sync_api import Page, expect

from qdisk.pve.cachesettings import read_settings
from qdisk.pve.host import PveHost

from access_helpers import AccessTree, KeyPair, perl_ticket, ticket_cookie
from cli_helpers import RunQdisk
from pve_helpers import GIB, MIB, NOISE, OTHER_NODE, THIS_NODE, PveTree, vm_size
from web_helpers import Api, make_certificate, make_pve_home, running_server, serving_process

pytestmark = pytest.mark.qemu

VMID = 100
CACHE = f"/nodes/{THIS_NODE}/qemu/{VMID}/qdisk/cache"
PREVIEW = f"{CACHE}/preview"
AUDIT = f"/nodes/{THIS_NODE}/qdisk/audit"
# QEMU's L2 cache of an image of 256 GiB or more when no option is given; the auto size of
# VM 100's 32 TiB scsi0 (L2 and refcount caches).
DEFAULT_L2 = 32 * MIB
AUTO_32T = 5 * GIB


@dataclass(frozen=True)
class HostServer:
    """The server over the host ``tree``, whose VM 100 runs as ``pid``; two Proxmox VE API
    tokens; ``key`` signs the cluster's login tickets."""

    tree: PveTree
    host: PveHost
    url: str
    pid: int
    admin_token: str
    reader_token: str
    access: AccessTree
    key: KeyPair

    def api(self, token: str | None = None) -> Api:
        return Api(self.url, token)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostServer]:
    home = make_pve_home(tmp_path_factory.mktemp("pve-serve"))
    tree = home.tree
    try:
        pid = tree.start(VMID)
        with running_server(home.settings, pve=home.host) as url:
            yield HostServer(tree, home.host, url, pid, home.admin_token, home.reader_token,
                             home.access, home.key)
    finally:
        tree.kill_all()


@pytest.fixture
def server(served: HostServer) -> Iterator[HostServer]:
    """The module's server; each test leaves VM 100 without settings and QEMU with its
    defaults, and Proxmox VE's files as they were."""
    before = served.tree.proxmox_files()
    try:
        yield served
    finally:
        # Through the server: QMP's client cannot run beside the browser's event loop.
        stored = read_settings(served.host.paths.cache_settings(VMID), VMID)
        if stored:
            reset = served.api(served.admin_token).put(CACHE, data={"delete": ",".join(stored)})
            assert reset.status_code == 200, reset.text
    assert served.tree.proxmox_files() == before, "a Proxmox VE file changed"


@pytest.fixture
def admin(server: HostServer) -> Api:
    return server.api(server.admin_token)


def _errors(response: requests.Response) -> dict[str, str]:
    body = response.json()
    assert body["data"] is None
    return dict(body.get("errors", {}))


def assert_grown(pid: int, before: int, expected: int) -> None:
    grown = vm_size(pid) - before
    assert expected - NOISE < grown < expected + NOISE, f"grown by {grown / MIB:.0f} MiB"


# --- authentication -------------------------------------------------------------------------

ENDPOINTS = [("GET", "/nodes"), ("GET", AUDIT), ("GET", CACHE), ("PUT", CACHE), ("POST", PREVIEW)]


def test_every_endpoint_needs_a_login_and_a_change_the_privilege_and_a_csrf_token(
        server: HostServer) -> None:
    for method, path in ENDPOINTS:
        assert server.api().request(method, path).status_code == 401, path
    change = {"scsi0": "qcow2-cache-size-based-on-disk=1"}
    refused = server.api(server.reader_token).put(CACHE, data=change)
    assert (refused.status_code, refused.json()["message"]) == \
        (403, f"Permission check failed (/vms/{VMID}, VM.Config.Disk)")
    assert server.api(server.reader_token).post(PREVIEW, data={"disk": "scsi0"}).status_code == 200
    # A browser logged in to Proxmox VE: a change without its CSRF token is refused.
    page = server.api()
    page.session.cookies.set("PVEAuthCookie", perl_ticket(server.key, "root@pam", time.time()))
    session = page.get("/access/ticket")
    assert session.status_code == 200 and session.json()["data"]["username"] == "root@pam"
    assert page.put(CACHE, data=change).status_code == 401
    assert not server.tree.settings_path(VMID).exists()
    csrf = session.json()["data"]["CSRFPreventionToken"]
    assert page.put(CACHE, data=change, headers={"CSRFPreventionToken": csrf}).status_code == 200


# --- the audit and the settings ---------------------------------------------------------------


def test_the_nodes_and_the_audit_are_those_of_qdisk_pve_audit(
        admin: Api, server: HostServer, run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = admin.get("/nodes").json()["data"]
    assert [(node["node"], node["local"]) for node in nodes] == [(THIS_NODE, 1), (OTHER_NODE, 0)]
    assert admin.get("/version").json()["data"]["mode"] == "pve"

    audit = admin.get(AUDIT)

    assert audit.status_code == 200
    monkeypatch.setenv("QDISK_PVE_ROOT", str(server.tree.root))
    monkeypatch.setenv("QDISK_PVE_NODE", THIS_NODE)
    # The node's part of the cluster's audit, with where each VM's settings stand.
    cli = run_qdisk("pve", "audit", "--all-nodes", "--json")
    assert cli.exit_code == 0, cli.stderr
    assert audit.json()["data"] == json.loads(cli.stdout)["nodes"][0]
    vm = audit.json()["data"]["vms"][0]
    assert (vm["vmid"], vm["running"], [disk["key"] for disk in vm["disks"]]) == \
        (VMID, True, ["scsi0", "scsi1", "scsi2", "scsi3"])
    assert vm["settings-state"] == {"state": "none", "node": None, "reasons": []}
    # Another node's VMs are readable too (configs are on every node); no such node is an error.
    other = admin.get(f"/nodes/{OTHER_NODE}/qdisk/audit").json()["data"]
    assert [vm["vmid"] for vm in other["vms"]] == [103, 200]
    unknown = admin.get("/nodes/nowhere/qdisk/audit")
    assert unknown.status_code == 400
    assert _errors(unknown) == {"node": f"no such node 'nowhere' (the cluster's nodes: {THIS_NODE}, "
                                        f"{OTHER_NODE})"}


def test_put_applies_to_the_running_vm_stores_and_get_shows_it(admin: Api,
                                                               server: HostServer) -> None:
    before = vm_size(server.pid)

    response = admin.put(CACHE, data={"scsi0": "qcow2-cache-size-based-on-disk=1"})

    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["stored"] == ["scsi0"]
    assert result["file"] == str(server.tree.settings_path(VMID))
    assert result["drives"]["scsi0"]["outcome"] == "applied"
    assert "qcow2 cache cache-size 5 GiB applied live" in result["drives"]["scsi0"]["messages"][0]
    assert server.tree.settings_path(VMID).read_text().splitlines()[1:] == \
        ["scsi0: qcow2-cache-size-based-on-disk=1"]
    assert_grown(server.pid, before, AUTO_32T - DEFAULT_L2)
    cache = admin.get(CACHE).json()["data"]
    assert (cache["running"], cache["settings"]) == (True, {"scsi0": "qcow2-cache-size-based-on-disk=1"})
    scsi0 = next(disk for disk in cache["disks"] if disk["key"] == "scsi0")
    assert scsi0["cache-source"] == "applied"
    [layer] = scsi0["layers"]
    assert (layer["now"]["coverage-percent"], layer["now"]["memory"]) == (100.0, AUTO_32T)
    assert layer["default"]["coverage-percent"] == 0.8
    assert set(cache["options"]) >= {"qcow2-cache-size", "qcow2-cache-size-based-on-disk"}

    removed = admin.put(CACHE, data={"delete": "scsi0"})

    assert removed.status_code == 200 and removed.json()["result"]["stored"] == ["scsi0"]
    assert not server.tree.settings_path(VMID).exists()
    assert_grown(server.pid, before, 0)


def test_bad_values_are_refused_per_parameter_and_change_nothing(admin: Api,
                                                                 server: HostServer) -> None:
    before = vm_size(server.pid)
    cases = [
        ({"scsi0": "qcow2-l2-cache-entry-size=131072"}, "scsi0", "the cluster size"),
        ({"scsi0": "qcow2-l2-cache-size=lots"}, "scsi0", "scsi0.qcow2-l2-cache-size:"),
        ({"scsi0": "qcow2-cache-size=64,qcow2-cache-size-based-on-disk=1"}, "scsi0", "scsi0."),
        ({"scsi0": "cache=writeback"}, "scsi0", "scsi0.cache:"),
        ({"scsi3": "qcow2-cache-size=64"}, "scsi3", "qcow2 images only"),
        ({"ide2": "qcow2-cache-size=64"}, "ide2", "a CD-ROM or an empty drive"),
        ({"scsi9": "qcow2-cache-size=64"}, "scsi9", "has no drive scsi9"),
        ({"efidisk0": "qcow2-cache-size=64"}, "efidisk0", "not a disk drive key"),
        ({"memory": "1"}, "memory", "property is not defined in schema"),
        ({"scsi0": "qcow2-cache-size=64", "delete": "scsi0"}, "scsi0", "set and delete"),
    ]
    for parameters, key, message in cases:
        response = admin.put(CACHE, data=parameters)
        assert response.status_code == 400, (parameters, response.text)
        assert message in _errors(response)[key], (parameters, response.text)
    assert admin.put(CACHE, data={}).json()["message"] == "no options specified"
    locked = admin.put(f"/nodes/{THIS_NODE}/qemu/102/qdisk/cache", data={"scsi0": "qcow2-cache-size=64"})
    assert locked.status_code == 400 and "VM 102 is locked (backup)" in locked.json()["message"]
    elsewhere = admin.get(f"/nodes/{THIS_NODE}/qemu/200/qdisk/cache")
    assert (elsewhere.status_code, elsewhere.json()["message"]) == (404, "VM 200 does not exist on node pve1")
    assert _errors(admin.get(f"/nodes/{THIS_NODE}/qemu/99/qdisk/cache")) == \
        {"vmid": "invalid VM id 99 (must be 100 to 999999999)"}
    assert not server.tree.settings_path(VMID).exists()
    assert_grown(server.pid, before, 0)


def test_the_preview_checks_settings_against_the_image_and_gives_each_layers_cache(
        admin: Api, server: HostServer) -> None:
    def preview(disk: str, settings: str) -> Any:
        response = admin.post(PREVIEW, data={"disk": disk, "settings": settings})
        assert response.status_code == 200, response.text
        return response.json()["data"]

    full = preview("scsi0", "qcow2-l2-cache-size=4096")
    assert full["errors"] == {} and full["format"] == "qcow2"
    # The drive's other values come along (the page shows them read-only).
    assert full["values"] == {"file": "local:100/vm-100-disk-0.qcow2", "discard": "on", "iothread": "1",
                              "size": "32T", "qcow2-l2-cache-size": "4096"}
    [layer] = full["layers"]
    assert (layer["edited"]["coverage-percent"], layer["edited"]["l2-cache-size"]) == (100.0, 4 * GIB)
    assert preview("scsi0", "")["layers"][0]["edited"]["coverage-percent"] == 0.8
    clone = preview("scsi1", "qcow2-cache-size-based-on-disk=1")["layers"]
    assert [layer["edited"]["coverage-percent"] for layer in clone] == [100.0, 100.0]
    assert preview("scsi0", "qcow2-l2-cache-entry-size=1000")["errors"] == \
        {"qcow2-l2-cache-entry-size": "must be a power of two"}
    too_large = preview("scsi0", "qcow2-l2-cache-entry-size=131072")
    assert "cluster size" in too_large["errors"]["qcow2-l2-cache-entry-size"]
    assert "qcow2 images only" in preview("scsi3", "")["errors"]["drive"]
    assert _errors(admin.post(PREVIEW, data={"disk": "efidisk0"}))["disk"].startswith("'efidisk0' is not")
    assert _errors(admin.post(PREVIEW, data={"settings": ""})) == \
        {"disk": "property is missing and it is not optional"}
    assert not server.tree.settings_path(VMID).exists()


def test_qdisk_home_endpoints_are_not_served_and_not_documented(server: HostServer, admin: Api) -> None:
    for method, path in [("PUT", f"/nodes/{THIS_NODE}/qemu/{VMID}/config"),
                         ("POST", f"/nodes/{THIS_NODE}/qemu/{VMID}/config"),
                         ("POST", f"/nodes/{THIS_NODE}/qemu/{VMID}/status/start"),
                         ("POST", f"/nodes/{THIS_NODE}/qemu/{VMID}/status/stop"),
                         ("GET", f"/nodes/{THIS_NODE}/qemu/{VMID}/config"),
                         ("GET", f"/nodes/{THIS_NODE}/storage")]:
        assert server.api().request(method, path).status_code == 401
        response = admin.request(method, path, data={"memory": "1"})
        assert response.status_code == 501, path
        assert "not served on a Proxmox VE host (qdisk serve --pve)" in response.json()["message"]
    document = admin.session.get(f"{server.url}/api2/openapi.json").json()
    assert set(document["paths"]["/api2/json/nodes/{node}/qemu/{vmid}/qdisk/cache"]) == {"get", "put"}
    for path in ("/api2/json/nodes/{node}/qdisk/audit",
                 "/api2/json/nodes/{node}/qemu/{vmid}/qdisk/cache/preview"):
        assert path in document["paths"]
    assert "/api2/json/nodes/{node}/qemu/{vmid}/config" not in document["paths"]


# --- the command ---------------------------------------------------------------------------


def test_serve_pve_refuses_a_root_that_is_no_host_or_lacks_this_node(
        run_qdisk: RunQdisk, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDISK_PVE_ROOT", str(tmp_path))
    monkeypatch.setenv("QDISK_PVE_NODE", THIS_NODE)
    no_host = run_qdisk("serve", "--pve", "--listen", "127.0.0.1:0")
    assert no_host.exit_code == 2 and "not a Proxmox VE host" in no_host.stderr
    (tmp_path / "etc" / "pve" / "nodes" / OTHER_NODE).mkdir(parents=True)
    no_node = run_qdisk("serve", "--pve", "--listen", "127.0.0.1:0")
    assert no_node.exit_code == 2
    assert f"node '{THIS_NODE}' is not a node of the cluster" in no_node.stderr
    assert "QDISK_PVE_NODE" in no_node.stderr and "Traceback" not in no_node.stderr


def test_proxmoxer_audits_and_sets_a_cache_through_serve_pve_over_tls(tmp_path: Path) -> None:
    home = make_pve_home(tmp_path)
    tree, settings = home.tree, home.settings
    user, token = home.admin_token.split("!")
    token_name, token_value = token.split("=")
    tls = make_certificate(tmp_path)
    before = tree.proxmox_files()
    with serving_process(["--pve", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
                         {"QDISK_HOME": str(settings.home), "QDISK_PVE_ROOT": str(tree.root),
                          "QDISK_PVE_NODE": THIS_NODE}) as (url, serves):
        assert serves == f"Proxmox VE node {THIS_NODE}, root {tree.root}"
        host, port = url.removeprefix("https://").rsplit(":", 1)
        proxmox = proxmoxer.ProxmoxAPI(host, port=int(port), user=user, token_name=token_name,
                                       token_value=token_value, verify_ssl=str(tls.cert))
        node = proxmox.nodes(THIS_NODE)
        assert [vm["vmid"] for vm in node.qdisk.audit.get()["vms"]] == [100, 101, 102]
        cache = node.qemu(101)("qdisk/cache")
        result = cache.put(scsi0="qcow2-l2-cache-size=64")
        assert result is None  # proxmoxer hands over `data`; the file says what was done
        assert cache.get()["settings"] == {"scsi0": "qcow2-l2-cache-size=64"}
        with pytest.raises(proxmoxer.ResourceException) as refused:
            cache.put(scsi0="qcow2-l2-cache-size=0")
        assert refused.value.status_code == 400 and "scsi0" in refused.value.errors
        del refused
        proxmox._store["session"].close()
    assert tree.settings_path(101).read_text().splitlines()[1:] == ["scsi0: qcow2-l2-cache-size=64"]
    assert tree.proxmox_files() == before


# --- the page -------------------------------------------------------------------------------


def test_the_page_audits_the_node_and_sets_a_disks_cache_live(
        server: HostServer, open_page: Callable[..., Page], tmp_path: Path) -> None:
    before = vm_size(server.pid)
    # Logged in to Proxmox VE's interface on this host: no login here.
    ticket = perl_ticket(server.key, "root@pam", time.time())
    page = open_page(server.url, cookies=[ticket_cookie(ticket, server.url)])
    expect(page.locator("#audit-view")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text("root@pam")
    expect(page.locator("#logout")).to_be_hidden()
    expect(page.locator("#node-name")).to_have_text(f"Proxmox VE node {THIS_NODE}")
    # QDISK_HOME's VM list, start/stop and config editing are not there.
    expect(page.locator("nav.vm-list")).to_be_hidden()
    expect(page.locator("#vm-detail")).to_be_hidden()
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(6)  # VM 100's 4 disks, 101's and 102's
    state = page.locator("#audit-table tr[data-vmid='100'] .settings-state")
    expect(state).to_have_attribute("data-state", "none")
    gauges = page.locator("#audit-table tr[data-vmid='100'] td.coverage .fill")
    assert [gauges.nth(i).get_attribute("data-coverage") for i in range(3)] == ["0.78", "6.25", "12.5"]
    expect(page.locator("#audit-table tr[data-key='scsi3']")).to_contain_text("raw: no qcow2 cache")
    scsi0 = page.locator("#audit-table tr[data-vmid='100'][data-key='scsi0']")

    scsi0.get_by_role("button", name="Edit").click()
    expect(page.locator("#disk-editor")).to_be_visible()
    expect(page.locator("#editor-title")).to_have_text("Hard Disk (scsi0) of VM 100")
    expect(page.locator("#field-volume")).to_have_value("local:100/vm-100-disk-0.qcow2")
    expect(page.locator("#field-discard")).to_be_checked()
    for field in ("#field-cache", "#field-discard", "#field-iothread", "#field-ssd", "#field-aio",
                  "#field-mbps_rd", "#field-bus", "#field-storage", "#field-format"):
        expect(page.locator(field)).to_be_disabled()
    auto = page.locator("#field-qcow2-cache-size-based-on-disk")
    expect(auto).to_be_enabled()
    expect(page.locator("#field-qcow2-l2-cache-size")).to_be_enabled()
    now = page.locator("#gauge .gauge-layer[data-depth='0'] .gauge-row.now .fill")
    expect(now).to_have_attribute("data-coverage", "0.8")
    page.locator("#field-qcow2-l2-cache-entry-size").fill("1000")
    expect(page.locator("#error-qcow2-l2-cache-entry-size")).to_have_text("must be a power of two")
    page.locator("#field-qcow2-l2-cache-entry-size").fill("")
    auto.check()
    expect(page.locator("#field-qcow2-l2-cache-size")).to_be_disabled()
    expect(page.locator("#gauge .gauge-row.edited .fill")).to_have_attribute("data-coverage", "100")
    page.screenshot(path=str(tmp_path / "pve-editor.png"))

    page.click("#editor-ok")

    expect(page.locator("#disk-editor")).to_be_hidden()
    message = page.locator("#audit-message")
    expect(message).to_contain_text("qcow2 cache cache-size 5 GiB applied live")
    expect(message).to_contain_text(f"scsi0: stored in {server.tree.settings_path(VMID)}")
    expect(scsi0.locator("td.coverage .fill")).to_have_attribute("data-coverage", "100")
    expect(scsi0).to_contain_text("qcow2-cache-size-based-on-disk=1")
    # Applied live by the page, but no node agent has recorded it: the cluster's view says so.
    expect(state).to_have_attribute("data-state", "pending")
    expect(state).to_contain_text(f"settings pending on {THIS_NODE}")
    expect(state).to_contain_text(f"no agent has recorded anything on {THIS_NODE}")
    assert server.tree.settings_path(VMID).read_text().splitlines()[1:] == \
        ["scsi0: qcow2-cache-size-based-on-disk=1"]
    assert_grown(server.pid, before, AUTO_32T - DEFAULT_L2)
    # The `server` fixture checks that the VM configs and storage.cfg are byte-identical.


def test_loose_vm_ids_and_overlong_settings_are_refused(admin: Api) -> None:
    for vmid in ("100.0", "+100", "0100", "1_00", "-5"):
        response = admin.get(f"/nodes/{THIS_NODE}/qemu/{vmid}/qdisk/cache")
        assert response.status_code == 400 and list(_errors(response)) == ["vmid"], response.text
    settings = ",".join(["qcow2-cache-size=1"] * 1000)
    for send in (lambda: admin.post(PREVIEW, data={"disk": "scsi0", "settings": settings}),
                 lambda: admin.put(CACHE, data={"scsi0": settings})):
        response = send()
        assert response.status_code == 400 and "8192 characters" in response.text, response.text

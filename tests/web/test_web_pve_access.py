"""`qdisk serve --pve` honours Proxmox VE's own users: who asks (login tickets signed by
Proxmox VE's own code, CSRF tokens, API tokens; qdisk's tokens are not taken there) and what
they may do (VM.Audit, VM.Config.Disk, Sys.Audit on the node), over tests/pve's host tree
(no VM runs: permissions need none). In a browser, the page opens logged in through the
ticket cookie, and shows the editor read-only to a user without VM.Config.Disk."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from qdisk.pve.host import PveHost
from qdisk.pve.nodestatus import DiskStatus, NodeStatusFile, VmStatus
from qdisk.settings import Settings, Tools
from qdisk.system.layout import PveLayout
from qdisk.web import tokens

from access_helpers import (
    AccessTree,
    KeyPair,
    make_key_pair,
    perl_csrf,
    perl_ticket,
    ticket_cookie,
)
from pve_helpers import OTHER_NODE, THIS_NODE, PveTree
from web_helpers import PVE_SECRET, Api, make_certificate, make_pve_home, running_server

ROOT_TOKEN = f"root@pam!admin={PVE_SECRET}"
TUNER_TOKEN = f"alice@pve!tuner={PVE_SECRET}"
USER_CFG = """\
user:root@pam:1:0:::::
token:root@pam!admin:0:0::
user:alice@pve:1:0:::::
token:alice@pve!tuner:0:1::
user:bob@pve:1:0:::::
user:carol@pve:1:0:::::
user:dave@pve:0:0:::::
role:DiskTuner:VM.Audit,VM.Config.Disk:
acl:1:/vms/100:alice@pve:DiskTuner:
acl:1:/vms:alice@pve!tuner:PVEVMAdmin:
acl:1:/vms/101:bob@pve:PVEAuditor:
acl:1:/nodes/pve1:carol@pve:PVEAuditor:
acl:1:/vms:carol@pve:PVEVMAdmin:
acl:1:/vms:dave@pve:PVEVMAdmin:
"""
CHANGE = {"scsi0": "qcow2-l2-cache-size=64"}


def cache(vmid: int) -> str:
    return f"/nodes/{THIS_NODE}/qemu/{vmid}/qdisk/cache"


def audit(node: str = THIS_NODE) -> str:
    return f"/nodes/{node}/qdisk/audit"


@dataclass(frozen=True)
class Served:
    tree: PveTree
    access: AccessTree
    key: KeyPair
    foreign: KeyPair
    settings: Settings
    url: str

    def ticket(self, userid: str, age: float = 0) -> str:
        return perl_ticket(self.key, userid, time.time() - age)

    def as_user(self, userid: str) -> Api:
        """A client logged in as ``userid``, as a browser is: the ticket in its cookie."""
        api = Api(self.url)
        api.session.cookies.set("PVEAuthCookie", self.ticket(userid))
        return api

    def with_token(self, token: str) -> Api:
        return Api(self.url, token)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("pve-access")
    home = make_pve_home(root, USER_CFG, ("alice@pve!tuner",))
    foreign = make_key_pair(root / "keys", "foreign")
    with running_server(home.settings, pve=home.host) as url:
        yield Served(home.tree, home.access, home.key, foreign, home.settings, url)


@pytest.fixture
def server(served: Served) -> Iterator[Served]:
    """Each test leaves no settings behind, and Proxmox VE's files as they were."""
    before = served.tree.proxmox_files()
    try:
        yield served
    finally:
        served.access.user_cfg(USER_CFG)
        for vmid in (100, 101):
            if served.tree.settings_path(vmid).exists():
                reset = served.with_token(ROOT_TOKEN).put(cache(vmid), data={"delete": "scsi0"})
                assert reset.status_code == 200, reset.text
    assert served.tree.proxmox_files() == before, "a Proxmox VE file changed"


def message(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("message", "")


# --- who asks -------------------------------------------------------------------------------


def test_only_proxmox_ves_valid_logins_are_taken(server: Served) -> None:
    assert message(Api(server.url).get("/nodes")) == \
        (401, "No ticket: log in to Proxmox VE first (https://<this node>:8006)")
    assert server.as_user("alice@pve").get("/nodes").status_code == 200
    # The ticket in an Authorization header, as API clients send it.
    header = {"Authorization": f"PVEAuthCookie={server.ticket('alice@pve')}"}
    assert Api(server.url).get("/nodes", headers=header).status_code == 200
    refused = {
        "expired": server.ticket("alice@pve", age=3 * 3600),
        "foreign": perl_ticket(server.foreign, "alice@pve", time.time()),
        "forged": server.ticket("alice@pve").replace("alice@pve", "root@pam"),
    }
    for what, ticket in refused.items():
        api = Api(server.url)
        api.session.cookies.set("PVEAuthCookie", ticket)
        assert message(api.get("/nodes")) == (401, "permission denied - invalid PVE ticket"), what
    assert message(server.as_user("dave@pve").get("/nodes")) == (401, "user 'dave@pve' is disabled")
    # qdisk's own tokens are for QDISK_HOME's mode only, even one named as a Proxmox VE token.
    assert message(server.with_token(tokens.create(server.settings, "home")).get("/nodes")) == \
        (401, "no such token 'home' for user 'root@pam'")
    assert message(server.with_token(tokens.create(server.settings, "admin")).get("/nodes")) == \
        (401, "invalid token value!")
    assert server.with_token(ROOT_TOKEN).get("/nodes").status_code == 200
    assert message(Api(server.url).get("/nodes", headers={"Authorization": "Basic cm9vdDp4"}))[0] == 401


def test_the_caller_is_checked_before_the_path_of_every_endpoint(server: Served) -> None:
    """An anonymous request about an unknown node learns nothing of the cluster's nodes."""
    anonymous = Api(server.url)
    bogus = cache(100).replace(THIS_NODE, "bogus")
    for response in (anonymous.get(audit("bogus")), anonymous.get(bogus),
                     anonymous.put(bogus, data=CHANGE),
                     anonymous.post(f"{bogus}/preview", data={"disk": "scsi0"})):
        assert response.status_code == 401, (response.request.method, response.request.url,
                                             response.text)
        assert THIS_NODE not in response.text


def test_qdisk_has_no_login_or_logout_of_its_own_there(server: Served) -> None:
    assert message(Api(server.url).post("/access/ticket", data={"token": ROOT_TOKEN}))[0] == 501
    alice = server.as_user("alice@pve")
    session = alice.get("/access/ticket").json()["data"]
    assert session["username"] == "alice@pve"
    logout = alice.request("DELETE", "/access/ticket",
                           headers={"CSRFPreventionToken": session["CSRFPreventionToken"]})
    assert logout.status_code == 501 and "log in and out in Proxmox VE's interface" in logout.json()["message"]
    # The page carries the mode, so a visitor without a ticket is sent to Proxmox VE.
    assert '<body data-mode="pve">' in requests.get(server.url + "/", timeout=30).text


# --- what they may do -----------------------------------------------------------------------


def test_the_audit_lists_only_the_vms_the_caller_may_see_and_totals_need_sys_audit(
        server: Served) -> None:
    def listed(api: Api, node: str = THIS_NODE) -> tuple[list[int], bool]:
        answer = api.get(audit(node))
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        return [vm["vmid"] for vm in data["vms"]], "memory" in data

    assert listed(server.as_user("alice@pve")) == ([100], False)
    assert listed(server.as_user("bob@pve")) == ([101], False)
    assert listed(server.as_user("carol@pve")) == ([100, 101, 102], True)
    assert listed(server.as_user("carol@pve"), OTHER_NODE) == ([103, 200], False)
    assert listed(server.with_token(ROOT_TOKEN)) == ([100, 101, 102], True)
    # A privilege-separated token: alice's privileges where its own are wider.
    assert listed(server.with_token(TUNER_TOKEN)) == ([100], False)
    # The totals are the node's, whatever the caller may see of it.
    carol = server.as_user("carol@pve").get(audit()).json()["data"]
    root = server.with_token(ROOT_TOKEN).get(audit()).json()["data"]
    assert (carol["memory"], carol["auto-memory"]) == (root["memory"], root["auto-memory"])


def test_the_audit_says_where_the_settings_of_each_vm_the_caller_may_see_stand(
        server: Served) -> None:
    root = server.with_token(ROOT_TOKEN)
    for vmid in (100, 101):
        assert root.put(cache(vmid), data=CHANGE).status_code == 200
    # pve1's agent applied VM 100's settings; VM 101 does not run there.
    record = NodeStatusFile(server.tree.pve / "qdisk" / "nodes" / f"{THIS_NODE}.json")
    record.vms[100] = VmStatus({"scsi0": DiskStatus(CHANGE["scsi0"], (), "2026-12-08T02:00:00Z")})
    record.save()
    try:
        def states(api: Api) -> dict[int, tuple[str, str | None, list[str]]]:
            answer = api.get(audit()).json()["data"]
            return {vm["vmid"]: tuple(vm["settings-state"].values()) for vm in answer["vms"]}

        assert states(server.as_user("alice@pve")) == \
            {100: ("applied", THIS_NODE, ["scsi0 at 2026-12-08T02:00:00Z"])}
        assert states(server.as_user("bob@pve")) == \
            {101: ("stopped", THIS_NODE, ["applied at its next start"])}
        assert states(root)[102] == ("none", None, [])
    finally:
        record.path.unlink()


def test_refusals_are_403_in_proxmox_ves_words(server: Served) -> None:
    alice, bob = server.as_user("alice@pve"), server.as_user("bob@pve")
    assert message(alice.get(cache(101))) == (403, "Permission check failed (/vms/101, VM.Audit)")
    # A VM that does not exist is refused alike: no one learns which VMs exist without VM.Audit.
    assert message(alice.get(cache(555))) == (403, "Permission check failed (/vms/555, VM.Audit)")
    assert message(server.with_token(ROOT_TOKEN).get(cache(555))) == (404, "VM 555 does not exist on node pve1")
    assert alice.get(cache(100)).json()["data"]["may-change"] is True
    assert bob.get(cache(101)).json()["data"]["may-change"] is False
    csrf = {"CSRFPreventionToken": bob.get("/access/ticket").json()["data"]["CSRFPreventionToken"]}
    assert bob.post(f"{cache(101)}/preview", data={"disk": "scsi0"}, headers=csrf).status_code == 200
    assert message(bob.put(cache(101), data=CHANGE, headers=csrf)) == \
        (403, "Permission check failed (/vms/101, VM.Config.Disk)")
    tuner = server.with_token(TUNER_TOKEN)
    assert message(tuner.put(cache(101), data=CHANGE)) == \
        (403, "Permission check failed (/vms/101, VM.Config.Disk)")
    assert not server.tree.settings_path(101).exists()
    # An API token writes without a CSRF token.
    assert tuner.put(cache(100), data=CHANGE).status_code == 200
    assert server.tree.settings_path(100).read_text().splitlines()[1:] == ["scsi0: qcow2-l2-cache-size=64"]


def test_a_ticket_writes_only_with_a_csrf_token_of_its_user(server: Served) -> None:
    alice = server.as_user("alice@pve")
    for csrf in (None, perl_csrf(server.access.www_key, "bob@pve", time.time())):
        headers = {} if csrf is None else {"CSRFPreventionToken": csrf}
        assert message(alice.put(cache(100), data=CHANGE, headers=headers)) == \
            (401, "Permission denied - invalid csrf token")
    assert not server.tree.settings_path(100).exists()
    # One made by Proxmox VE's code (its interface holds one), or the one qdisk gives the page.
    own = perl_csrf(server.access.www_key, "alice@pve", time.time())
    assert alice.put(cache(100), data=CHANGE, headers={"CSRFPreventionToken": own}).status_code == 200
    given = alice.get("/access/ticket").json()["data"]["CSRFPreventionToken"]
    assert alice.put(cache(100), data={"delete": "scsi0"},
                     headers={"CSRFPreventionToken": given}).status_code == 200


def test_the_server_follows_edits_of_user_cfg_without_a_restart(server: Served) -> None:
    bob = server.as_user("bob@pve")
    csrf = {"CSRFPreventionToken": bob.get("/access/ticket").json()["data"]["CSRFPreventionToken"]}
    assert bob.put(cache(101), data=CHANGE, headers=csrf).status_code == 403
    server.access.user_cfg(USER_CFG + "acl:1:/vms/101:bob@pve:DiskTuner:\n")
    assert bob.put(cache(101), data=CHANGE, headers=csrf).status_code == 200
    server.access.user_cfg(USER_CFG.replace("user:bob@pve:1:", "user:bob@pve:0:"))
    assert message(bob.get(cache(101))) == (401, "user 'bob@pve' is disabled")


def test_an_unreadable_user_cfg_refuses_every_caller_with_401(server: Served) -> None:
    server.access.user_cfg(USER_CFG.replace("user:root@pam:1:", "user:root@pam:0:"))
    user_cfg = server.access.pve / "user.cfg"
    user_cfg.unlink()
    user_cfg.symlink_to(user_cfg.name)  # a loop: stat fails, not with "no such file"
    for api in (server.with_token(ROOT_TOKEN), server.as_user("root@pam"), server.as_user("alice@pve")):
        status, text = message(api.get(cache(100)))
        assert (status, text.split(": ")[0]) == (401, f"cannot read {user_cfg}"), text
    user_cfg.unlink()
    server.access.user_cfg(USER_CFG)
    assert server.with_token(ROOT_TOKEN).get(cache(100)).status_code == 200


# --- the page -------------------------------------------------------------------------------


def test_the_page_sends_a_visitor_without_a_ticket_to_proxmox_ve(
        server: Served, open_page: Callable[..., Page]) -> None:
    page = open_page(server.url)
    expect(page.locator("#pve-login")).to_be_visible()
    expect(page.locator("#login-form")).to_be_hidden()
    expect(page.locator("#pve-login-link")).to_have_attribute("href", "https://127.0.0.1:8006/")
    # Served over plain HTTP here: Proxmox VE's Secure cookie would never arrive.
    expect(page.locator("#pve-login-https")).to_be_visible()
    expect(page.locator("#main-view")).to_be_hidden()


def test_the_page_opens_logged_in_and_read_only_without_vm_config_disk(
        server: Served, open_page: Callable[..., Page], tmp_path: Path) -> None:
    page = open_page(server.url, cookies=[ticket_cookie(server.ticket("bob@pve"), server.url)])
    expect(page.locator("#audit-view")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text("bob@pve")
    expect(page.locator("#audit-table tbody tr")).to_have_count(1)  # VM 101's one disk
    expect(page.locator("#audit-total")).to_have_text(f"The node's totals need Sys.Audit on /nodes/{THIS_NODE}.")
    page.locator("#audit-table tr[data-vmid='101'][data-key='scsi0']").get_by_role("button", name="Edit").click()
    expect(page.locator("#disk-editor")).to_be_visible()
    expect(page.locator("#readonly-hint")).to_have_text(
        "Read-only: changing the qcow2 cache of VM 101 needs VM.Config.Disk on /vms/101.")
    for field in ("#field-qcow2-cache-size-based-on-disk", "#field-qcow2-l2-cache-size",
                  "#field-qcow2-cache-size", "#editor-ok"):
        expect(page.locator(field)).to_be_disabled()
    page.screenshot(path=str(tmp_path / "read-only-editor.png"))


def test_the_page_lets_a_user_with_vm_config_disk_change_the_cache(
        server: Served, open_page: Callable[..., Page]) -> None:
    page = open_page(server.url, cookies=[ticket_cookie(server.ticket("alice@pve"), server.url)])
    expect(page.locator("#audit-table tbody tr")).to_have_count(4)  # VM 100's four disks
    page.locator("#audit-table tr[data-vmid='100'][data-key='scsi0']").get_by_role("button", name="Edit").click()
    expect(page.locator("#readonly-hint")).to_be_hidden()
    page.locator("#field-qcow2-l2-cache-size").fill("64")
    expect(page.locator("#editor-ok")).to_be_enabled()
    page.click("#editor-ok")
    expect(page.locator("#disk-editor")).to_be_hidden()
    expect(page.locator("#audit-message")).to_contain_text("scsi0: stored in")
    assert server.tree.settings_path(100).read_text().splitlines()[1:] == ["scsi0: qcow2-l2-cache-size=64"]


def test_a_browser_logged_in_to_proxmox_ve_on_port_8006_opens_the_page_logged_in(
        served: Served, open_page: Callable[..., Page], tmp_path: Path) -> None:
    """Cookies are per host, not per port: the Secure cookie Proxmox VE's interface set at
    https://127.0.0.1:8006 reaches qdisk's page on another port of the host, over HTTPS."""
    tls = make_certificate(tmp_path)
    host = PveHost(PveLayout(served.tree.root, THIS_NODE), Tools())
    with running_server(served.settings, tls, pve=host) as url:
        assert url.startswith("https://127.0.0.1:") and not url.endswith(":8006")
        cookie = ticket_cookie(served.ticket("alice@pve"), "https://127.0.0.1:8006", secure=True)
        page = open_page(url, cookies=[cookie], trusted_certificate=True)
        expect(page.locator("#user-name")).to_have_text("alice@pve")
        expect(page.locator("#audit-table tbody tr")).to_have_count(4)  # VM 100's four disks
        page.close()

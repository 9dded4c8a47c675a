"""The web API's defects found by hostile testing (issue 19), each held by a test that
failed before its fix: sessions bound to their token, authentication before the body,
previews of host paths, loose VM ids, repeated JSON keys, a damaged token file, per-token
session caps, the token file's home made private whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from qdisk.config.propstring import MAX_LENGTH as MAX_DRIVE_LENGTH
from qdisk.settings import Settings, Tools
from qdisk.vm import store
from qdisk.vm.cacheview import ONLY_ROOT_PATHS
from qdisk.web import tokens
from qdisk.web.auth import MAX_SESSIONS_PER_TOKEN, Authenticator, AuthError
from qdisk.web.http import MAX_BODY_BYTES, node_name

from cli_helpers import RunQdisk
from web_helpers import VMID, Api, WebHome, running_server, serving_process, vm_path

NODE = node_name()


def _errors(response: requests.Response) -> dict[str, str]:
    body = response.json()
    assert body["data"] is None, body
    return dict(body.get("errors", {}))


# --- 1: a session is bound to the exact token it was opened with -------------------------


def test_a_session_ends_when_its_token_is_removed_even_if_a_namesake_is_created(
        anonymous: Api, web_home: WebHome) -> None:
    settings = web_home.settings
    line = tokens.create(settings, "shortlived", read_only=True)
    try:
        session = anonymous.post("/access/ticket", data={"token": line})
        assert session.status_code == 200 and session.json()["data"]["read-only"] is True
        assert anonymous.get(vm_path("/config")).status_code == 200
        tokens.remove(settings, "shortlived")
        tokens.create(settings, "shortlived")  # the same name, read-write now
        csrf = {"CSRFPreventionToken": session.json()["data"]["CSRFPreventionToken"]}
        read = anonymous.get(vm_path("/config"))
        assert read.status_code == 401 and "no longer exists" in read.json()["message"]
        # The session is gone for good: the namesake's rights never reach it.
        write = anonymous.put(vm_path("/config"), data={"memory": "96"}, headers=csrf)
        assert write.status_code == 401, write.text
        assert "memory: 64\n" in web_home.config_file.read_text()
    finally:
        tokens.remove(settings, "shortlived")


# --- 9: the session cap is per token ------------------------------------------------------


def test_one_tokens_logins_never_end_another_tokens_sessions(web_home: WebHome) -> None:
    authenticator = Authenticator(tokens.TokenStore(web_home.settings))
    admin_session, _, _ = authenticator.login(web_home.admin_token)
    reader_sessions = [authenticator.login(web_home.reader_token)[0]
                       for _ in range(MAX_SESSIONS_PER_TOKEN + 1100)]
    assert authenticator.authenticate("GET", None, admin_session, None).token_id == "root@pam!admin"
    # The reader's own oldest sessions made room; its newest ones live.
    with pytest.raises(AuthError):
        authenticator.authenticate("GET", None, reader_sessions[0], None)
    for session in reader_sessions[-MAX_SESSIONS_PER_TOKEN:]:
        assert authenticator.authenticate("GET", None, session, None).read_only


# --- 8: authentication before the body ------------------------------------------------------


@pytest.mark.parametrize("body", [b"x" * (MAX_BODY_BYTES + 1), b"memory=1", b"{"])
def test_who_asks_is_checked_before_the_body_is_read(anonymous: Api, reader: Api, body: bytes) -> None:
    for path in (vm_path("/config"), vm_path("/status/start")):
        refused = anonymous.post(path, data=body, headers={"Content-Type": "text/xml"})
        assert (refused.status_code, refused.json()["message"].split(":")[0]) == \
            (401, "authentication required"), refused.text
        forbidden = reader.post(path, data=body, headers={"Content-Type": "application/json"})
        assert forbidden.status_code == 403, forbidden.text


# --- 2: bounded preview work --------------------------------------------------------------------


def test_a_drive_string_beyond_the_maximum_is_refused_and_one_within_gives_each_problem(
        reader: Api, admin: Api, web_home: WebHome) -> None:
    hostile = "local:1," + ",".join(["cache=fast"] * 21_000)  # 230 KB: froze the server
    response = reader.post(vm_path("/qcow2-cache/preview"), json={"disk": "scsi0", "drive": hostile})
    assert response.status_code == 400, response.text
    assert response.json()["message"] == f"scsi0: value may only be {MAX_DRIVE_LENGTH} characters long"
    changed = admin.put(vm_path("/config"), json={"scsi5": hostile})
    assert changed.status_code == 400 and "8192 characters" in _errors(changed)["scsi5"]
    within = ",".join(["="] * (MAX_DRIVE_LENGTH // 2))
    assert len(within) < MAX_DRIVE_LENGTH
    result = reader.post(vm_path("/qcow2-cache/preview"),
                         json={"disk": "scsi0", "drive": within}).json()["data"]
    assert result["layers"] == [] and result["errors"]
    assert "scsi5" not in web_home.config_file.read_text()


# --- 11: a read-only token previews volumes of configured storages only -------------------


def test_a_read_only_preview_of_a_host_path_reads_nothing(
        reader: Api, admin: Api, tmp_path: Path) -> None:
    image = tmp_path / "secret.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    answers = []
    for path in (str(image), str(tmp_path / "missing.qcow2"), "/etc/shadow"):
        response = reader.post(vm_path("/qcow2-cache/preview"),
                               json={"disk": "scsi0", "drive": f"{path},format=qcow2"})
        assert response.status_code == 200, response.text
        result = response.json()["data"]
        assert result["errors"] == {"file": ONLY_ROOT_PATHS} and result["layers"] == []
        answers.append({key: value for key, value in result.items()})
    # Whether the file exists, and what it holds, makes no difference to the answer.
    assert answers[0] == answers[1] == answers[2]
    # A volume of a configured storage is previewed as before; root's token may name a path.
    volume = reader.post(vm_path("/qcow2-cache/preview"),
                         json={"disk": "scsi0", "drive": f"local:{VMID}/vm-{VMID}-disk-0.qcow2"})
    assert volume.json()["data"]["layers"][0]["virtual-size"] == 2**40
    rooted = admin.post(vm_path("/qcow2-cache/preview"),
                        json={"disk": "scsi0", "drive": f"{image},format=qcow2"}).json()["data"]
    assert rooted["layers"][0]["virtual-size"] == 2**30


# --- 12: Proxmox VE's pve-vmid, and nothing looser --------------------------------------------


@pytest.mark.parametrize("vmid", ["100.0", "+100", "1_00", "0100", "100%20", "-5", "99",
                                  "1000000000", "%D9%A1%D9%A0%D9%A0", "9" * 5000])
def test_only_proxmox_ve_vm_ids_reach_a_vm(admin: Api, vmid: str) -> None:
    for path in (f"/nodes/{NODE}/qemu/{vmid}/config", f"/nodes/{NODE}/qemu/{vmid}/qcow2-cache"):
        response = admin.get(path)
        assert response.status_code == 400, (path, response.text)
        assert list(_errors(response)) == ["vmid"]
    content = admin.get(f"/nodes/{NODE}/storage/local/content", params={"vmid": vmid})
    assert content.status_code == 400 and list(_errors(content)) == ["vmid"]
    assert admin.get(f"/nodes/{NODE}/qemu/{VMID}/config").status_code == 200


# --- 13: a repeated key of a JSON body ------------------------------------------------------------


def test_a_key_repeated_in_a_json_body_is_refused_as_in_a_form(admin: Api, web_home: WebHome) -> None:
    response = admin.put(vm_path("/config"), data=b'{"memory": "128", "memory": "96"}',
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert _errors(response) == {"memory": "parameter given more than once"}
    assert "memory: 64\n" in web_home.config_file.read_text()


# --- 7: a damaged token file ------------------------------------------------------------------------


@pytest.fixture
def damaged_home(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    settings = Settings(home=tmp_path / "qdisk-home", tools=Tools())
    yield settings, tokens.create(settings, "admin")


DAMAGES = [
    (b"\xff", "not UTF-8"),
    (b'{"root@pam!admin": ', "not JSON"),
    (b'["root@pam!admin"]', "not a table of tokens"),
    (b'{"root@pam!admin": {"sha256": "00", "created": 1}}', "'sha256' is not"),
    (b'{"root@pam!admin": {"sha256": "' + b"0" * 64 + b'", "created": "soon"}}', "'created' is not"),
    (b'{"root@pam!admin": {"sha256": "' + b"0" * 64 + b'", "read-only": "no"}}', "'read-only' is not"),
]


@pytest.mark.parametrize(("damage", "problem"), DAMAGES)
def test_a_damaged_token_file_is_named_and_refuses_tokens_while_the_server_serves(
        damaged_home: tuple[Settings, str], run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch,
        damage: bytes, problem: str) -> None:
    settings, token = damaged_home
    path = tokens.token_file(settings)
    healthy = path.read_bytes()
    with running_server(settings) as url:
        api, page = Api(url, token), Api(url)
        assert api.get("/version").status_code == 200
        path.write_bytes(damage)
        for response in (api.get("/version"), page.post("/access/ticket", data={"token": token})):
            assert response.status_code == 401, response.text
            assert "cannot read its API tokens" in response.json()["message"]
            assert "Traceback" not in response.text and str(path) not in response.text
        assert page.session.get(f"{url}/").status_code == 200
        path.write_bytes(healthy)
        assert api.get("/version").status_code == 200
    path.write_bytes(damage)
    monkeypatch.setenv("QDISK_HOME", str(settings.home))
    for command in (("token", "list"), ("token", "create", "other"), ("token", "remove", "admin")):
        result = run_qdisk(*command)
        assert result.exit_code == 1, result
        assert result.stderr.startswith(f"qdisk: {path}: the API token file is damaged (")
        assert problem in result.stderr and "internal error" not in result.stderr


def test_qdisk_serve_starts_with_a_damaged_token_file(damaged_home: tuple[Settings, str]) -> None:
    settings, token = damaged_home
    tokens.token_file(settings).write_bytes(b"\xff")
    with serving_process([], {"QDISK_HOME": str(settings.home)}) as (url, _):
        assert Api(url.rstrip("/"), token).get("/version").status_code == 401
        assert requests.get(url, timeout=30).status_code == 200


# --- 10: the home token create makes is private whatever the umask --------------------------------


def test_token_create_on_a_fresh_home_makes_it_private_whatever_the_umask(
        tmp_path: Path, run_qdisk: RunQdisk, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "fresh" / "qdisk-home"
    monkeypatch.setenv("QDISK_HOME", str(home))
    previous = os.umask(0)
    try:
        result = run_qdisk("token", "create", "first")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.stderr
    for directory in (home, home / "priv"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(tokens.token_file(Settings(home=home, tools=Tools())).stat().st_mode) == 0o600
    assert run_qdisk("token", "list").exit_code == 0


# --- the VM list with a config that cannot be read; a lock: line ---------------------------------


def test_the_vm_list_names_an_unreadable_config_and_shows_the_others(
        admin: Api, web_home: WebHome, open_page: Callable[[str], Page], server_url: str) -> None:
    broken = store.config_path(web_home.settings, 101)
    broken.write_bytes(b"name: \xff\xfe\n")
    try:
        listed = admin.get(f"/nodes/{NODE}/qemu")
        assert listed.status_code == 200, listed.text
        vms = {vm["vmid"]: vm for vm in listed.json()["data"]}
        assert vms[VMID] == {"vmid": VMID, "name": "db", "status": "stopped"}
        assert set(vms[101]) == {"vmid", "status", "problem"} and str(broken) in vms[101]["problem"]
        assert admin.get(f"/nodes/{NODE}/qemu/101/config").status_code == 400
        page = open_page(server_url)
        page.fill("#token-input", web_home.admin_token)
        page.click("#login-button")
        expect(page.locator("#vm-table tbody tr")).to_have_count(2)
        expect(page.locator("#vm-table tbody tr[data-vmid='101'] .problem")).to_contain_text(str(broken))
        expect(page.locator(f"#vm-table tbody tr[data-vmid='{VMID}'] a")).to_have_text("db")
    finally:
        broken.unlink()


def test_a_locked_vm_is_changed_only_with_skiplock(admin: Api, web_home: WebHome) -> None:
    config = web_home.config_file
    healthy = config.read_text()
    config.write_text(healthy + "lock: backup\n")
    try:
        refused = admin.put(vm_path("/config"), data={"memory": "96"})
        assert refused.status_code == 400 and refused.json()["message"] == f"VM {VMID} is locked (backup)"
        assert admin.post(vm_path("/status/start")).json()["message"] == f"VM {VMID} is locked (backup)"
        assert "skiplock" in _errors(admin.put(vm_path("/config"), data={"memory": "96",
                                                                       "skiplock": "maybe"}))
        assert admin.put(vm_path("/config"), data={"memory": "96", "skiplock": "1"}).status_code == 200
        assert "memory: 96\n" in config.read_text() and "lock: backup\n" in config.read_text()
    finally:
        config.write_text(healthy)


def test_only_root_may_use_skiplock(admin: Api, web_home: WebHome) -> None:
    """As qemu-server: a write token of any user but root@pam is refused skiplock, even
    with skiplock=0 allowed, and before anything is changed."""
    line = tokens.create(web_home.settings, "ops", user="alice@pve")
    config = web_home.config_file
    healthy = config.read_text()
    config.write_text(healthy + "lock: backup\n")
    try:
        alice = Api(admin.url, line)
        only_root = {"skiplock": "Only root may use this option."}
        for response in (alice.put(vm_path("/config"), data={"memory": "96", "skiplock": "1"}),
                         alice.post(vm_path("/config"), data={"memory": "96", "skiplock": "1"}),
                         alice.post(vm_path("/status/start"), data={"skiplock": "1"}),
                         alice.post(vm_path("/status/stop"), data={"skiplock": "1"})):
            assert (response.status_code, _errors(response)) == (400, only_root), response.request.url
        assert config.read_text() == healthy + "lock: backup\n"
        assert alice.put(vm_path("/config"), data={"memory": "96", "skiplock": "0"}).json()["message"] == \
            f"VM {VMID} is locked (backup)"
    finally:
        config.write_text(healthy)
        tokens.remove(web_home.settings, "ops", user="alice@pve")

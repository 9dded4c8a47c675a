"""The API against a real server: every endpoint, authentication, read-only tokens, CSRF,
digests, parameters as Proxmox VE takes them, and hostile values refused per field."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from qdisk.vm.errors import StaleDigestError
from qdisk.web.http import MAX_BODY_BYTES, node_name

from web_helpers import VMID, Api, WebHome, vm_path

pytestmark = pytest.mark.qemu

NODE = node_name()
# (method, path) of every endpoint; each needs authentication.
ENDPOINTS = [
    ("GET", "/nodes"), ("GET", "/version"), ("GET", f"/nodes/{NODE}/qemu"),
    ("GET", vm_path("/config")), ("PUT", vm_path("/config")), ("POST", vm_path("/config")),
    ("GET", vm_path("/pending")), ("GET", vm_path("/status/current")),
    ("POST", vm_path("/status/start")), ("POST", vm_path("/status/stop")),
    ("GET", vm_path("/qcow2-cache")), ("POST", vm_path("/qcow2-cache/preview")),
    ("GET", f"/nodes/{NODE}/storage"), ("GET", f"/nodes/{NODE}/storage/local/content"),
    ("GET", "/access/ticket"), ("DELETE", "/access/ticket"),
]
WRITES = [("PUT", vm_path("/config")), ("POST", vm_path("/config")),
          ("POST", vm_path("/status/start")), ("POST", vm_path("/status/stop"))]


def _errors(response: requests.Response) -> dict[str, str]:
    body = response.json()
    assert body["data"] is None
    return dict(body.get("errors", {}))


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_a_request_without_a_valid_token(
        anonymous: Api, server_url: str, web_home: WebHome, method: str, path: str) -> None:
    assert anonymous.request(method, path, data={"memory": "512"}).status_code == 401
    wrong = Api(server_url, web_home.admin_token.rsplit("=", 1)[0] + "=not-the-secret")
    response = wrong.request(method, path, data={"memory": "512"})
    assert response.status_code == 401
    assert response.json() == {"data": None,
                               "message": "authentication failure: unknown token or wrong secret"}
    assert "memory: 64" in web_home.config_file.read_text()


def test_the_page_is_served_without_login_the_openapi_document_is_not(
        anonymous: Api, admin: Api, server_url: str) -> None:
    page = anonymous.session.get(f"{server_url}/")
    assert page.status_code == 200 and '<dialog id="disk-editor">' in page.text
    for asset in ("qdisk.js", "qdisk.css", "favicon.svg"):
        assert anonymous.session.get(f"{server_url}/static/{asset}").status_code == 200
    # Nothing from elsewhere: the page works offline.
    assert "http://" not in page.text and "https://" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert anonymous.session.get(f"{server_url}/api2/openapi.json").status_code == 401
    document = admin.session.get(f"{server_url}/api2/openapi.json").json()
    for path in ("/api2/json/nodes/{node}/qemu/{vmid}/config",
                 "/api2/json/nodes/{node}/qemu/{vmid}/qcow2-cache/preview",
                 "/api2/json/nodes/{node}/storage/{storage}/content"):
        assert path in document["paths"]
    assert set(document["paths"]["/api2/json/nodes/{node}/qemu/{vmid}/config"]) == {"get", "put", "post"}
    assert "PVEAPIToken" in document["components"]["securitySchemes"]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_read_only_token_reads_but_changes_nothing(reader: Api, web_home: WebHome,
                                                     method: str, path: str) -> None:
    before = web_home.config_file.read_text()
    response = reader.request(method, path, data={"memory": "512"})
    assert response.status_code == 403
    assert "read-only" in response.json()["message"]
    assert web_home.config_file.read_text() == before
    assert reader.get(vm_path("/config")).json()["data"]["memory"] == "64"
    # A preview computes, it changes nothing: allowed.
    assert reader.post(vm_path("/qcow2-cache/preview"),
                       data={"disk": "scsi0", "drive": "local:100/x.qcow2"}).status_code == 200


def test_the_page_session_needs_its_csrf_token_for_every_change(
        anonymous: Api, web_home: WebHome) -> None:
    assert anonymous.post("/access/ticket", data={"token": "root@pam!admin=wrong"}).status_code == 401
    login = anonymous.post("/access/ticket", json={"token": web_home.admin_token})
    assert login.status_code == 200
    session = login.json()["data"]
    assert session["username"] == "root@pam!admin" and session["read-only"] is False
    cookie = login.headers["set-cookie"]
    assert "PVEAuthCookie=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert anonymous.get(vm_path("/config")).status_code == 200
    assert anonymous.get("/access/ticket").json()["data"]["CSRFPreventionToken"] == \
        session["CSRFPreventionToken"]
    for headers in ({}, {"CSRFPreventionToken": "forged"}):
        refused = anonymous.put(vm_path("/config"), data={"memory": "96"}, headers=headers)
        assert refused.status_code == 401 and "CSRF" in refused.json()["message"]
        assert "memory: 64" in web_home.config_file.read_text()
    csrf = {"CSRFPreventionToken": session["CSRFPreventionToken"]}
    assert anonymous.put(vm_path("/config"), data={"memory": "64"}, headers=csrf).status_code == 200
    assert anonymous.request("DELETE", "/access/ticket", headers=csrf).status_code == 200
    assert anonymous.get(vm_path("/config")).status_code == 401


def test_a_read_only_session_cannot_change_anything(anonymous: Api, web_home: WebHome) -> None:
    session = anonymous.post("/access/ticket", data={"token": web_home.reader_token}).json()["data"]
    assert session["read-only"] is True
    response = anonymous.put(vm_path("/config"), data={"memory": "96"},
                             headers={"CSRFPreventionToken": session["CSRFPreventionToken"]})
    assert response.status_code == 403


def test_config_carries_the_file_digest_and_a_stale_digest_is_refused(
        admin: Api, web_home: WebHome) -> None:
    config = admin.get(vm_path("/config")).json()["data"]
    assert config["digest"] == hashlib.sha1(web_home.config_file.read_bytes()).hexdigest()
    assert config["name"] == "db" and config["scsi0"].startswith(f"local:{VMID}/vm-{VMID}-disk-0.qcow2")
    assert admin.put(vm_path("/config"), data={"memory": "80", "digest": config["digest"]}).status_code == 200
    stale = admin.put(vm_path("/config"), data={"memory": "96", "digest": config["digest"]})
    assert stale.status_code == 400
    assert _errors(stale) == {"digest": str(StaleDigestError())}
    assert "memory: 80" in web_home.config_file.read_text()
    fresh = admin.get(vm_path("/config"), params={"current": "1"}).json()["data"]
    assert fresh["memory"] == "80" and fresh["digest"] != config["digest"]
    assert admin.put(vm_path("/config"), data={"memory": "64", "digest": fresh["digest"]}).status_code == 200


@pytest.mark.parametrize(("drive", "field", "message"), [
    ("local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-entry-size=1000",
     "scsi0.qcow2-l2-cache-entry-size", "must be a power of two"),
    ("local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-entry-size=131072",
     "scsi0.qcow2-l2-cache-entry-size", "the cluster size"),
    ("local:100/vm-100-disk-0.qcow2,qcow2-cache-size-based-on-disk=1,qcow2-l2-cache-size=64",
     "scsi0.qcow2-cache-size-based-on-disk", "not compatible"),
    ("local:100/vm-100-disk-0.qcow2,qcow2-cache-size=99999999999999999999999",
     "scsi0.qcow2-cache-size", ""),
    ("local:100/vm-100-disk-0.qcow2,cache=fast", "scsi0.cache", ""),
    ("local:100/vm-100-disk-0.qcow2,nonsense=1", "scsi0.nonsense", ""),
    ("local:100/vm-100-disk-0.qcow2\nmemory: 1", "scsi0", ""),
    ("local:../../../etc/passwd", "scsi0", ""),
    ("/etc/shadow,format=qcow2,qcow2-l2-cache-size=1", "scsi0", ""),
])
def test_hostile_drive_strings_are_refused_under_their_field(
        admin: Api, web_home: WebHome, drive: str, field: str, message: str) -> None:
    before = web_home.config_file.read_text()
    for send in ({"data": {"scsi0": drive}}, {"json": {"scsi0": drive}}):
        response = admin.put(vm_path("/config"), **send)
        assert response.status_code == 400, response.text
        errors = _errors(response)
        assert list(errors) == ["scsi0"]
        assert any(line.startswith(f"{field}") and message in line for line in errors["scsi0"].split("\n"))
    assert web_home.config_file.read_text() == before


def test_parameters_come_form_encoded_or_as_json_and_are_checked(admin: Api, web_home: WebHome) -> None:
    assert admin.put(vm_path("/config"), json={"memory": 72, "onboot": True}).status_code == 200
    assert "memory: 72\n" in web_home.config_file.read_text() and "onboot: 1\n" in web_home.config_file.read_text()
    assert admin.post(vm_path("/config"), data={"delete": "onboot", "memory": "64"}).json() == {
        "data": None, "result": {"applied": ["memory", "onboot"], "pending": [], "notes": [],
                                 "warnings": []}}
    assert "onboot" not in web_home.config_file.read_text()
    assert _errors(admin.put(vm_path("/config"), data=[("memory", "1"), ("memory", "2")])) == {
        "memory": "parameter given more than once"}
    assert set(_errors(admin.put(vm_path("/config"), data={"bogus": "1", "revert": "x"}))) == {"bogus", "revert"}
    assert _errors(admin.put(vm_path("/config"), json={"memory": {"nested": 1}})) == {
        "memory": "type check failed - expected a string, number or boolean"}
    assert admin.put(vm_path("/config"), data="\xff=1".encode("latin-1"),
                     headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
    assert admin.put(vm_path("/config"), data=b"memory=1",
                     headers={"Content-Type": "text/xml"}).status_code == 415
    assert admin.put(vm_path("/config"), data=b"x" * (MAX_BODY_BYTES + 1)).status_code == 413
    assert admin.put(vm_path("/config")).json()["message"] == "no options specified"
    assert _errors(admin.put(vm_path("/config"), data={"scsi3": "/tmp/a\0b"})) == {
        "scsi3": "value must not contain a NUL character"}
    assert admin.put(vm_path("/config"), data=b"[" * 100_000,
                     headers={"Content-Type": "application/json"}).status_code == 400
    many = "&".join(f"k{number}=1" for number in range(1001))
    assert admin.put(vm_path("/config"), data=many.encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
    assert _errors(admin.put(vm_path("/config"), data={"memory": "8"})) == {
        "memory": "memory: value must have a minimum value of 16"}
    assert "memory: 64\n" in web_home.config_file.read_text()


def test_node_and_vmid_are_checked(admin: Api) -> None:
    assert _errors(admin.get("/nodes/elsewhere/qemu")) == {
        "node": f"no such node 'elsewhere' (this host is '{NODE}')"}
    assert _errors(admin.get(f"/nodes/{NODE}/qemu/abc/config")) == {
        "vmid": "type check ('integer') failed - got 'abc'"}
    assert "vmid" in _errors(admin.get(f"/nodes/{NODE}/qemu/99/config"))
    missing = admin.get(f"/nodes/{NODE}/qemu/4242/config")
    assert missing.status_code == 404 and missing.json()["message"] == "VM 4242 does not exist"
    assert admin.get("/nowhere").status_code == 404


def test_lists_status_pending_and_storage(admin: Api, web_home: WebHome) -> None:
    assert admin.get("/nodes").json()["data"] == [{"node": NODE, "status": "online", "type": "node"}]
    assert admin.get(f"/nodes/{NODE}/qemu").json()["data"] == [
        {"vmid": VMID, "name": "db", "status": "stopped"}]
    status = admin.get(vm_path("/status/current")).json()["data"]
    assert (status["status"], status["pid"], status["name"]) == ("stopped", None, "db")
    pending = admin.get(vm_path("/pending")).json()["data"]
    assert {"key": "memory", "value": "64", "delete": 0} in pending
    storages = admin.get(f"/nodes/{NODE}/storage").json()["data"]
    assert [(item["storage"], item["type"], item["active"]) for item in storages] == [("local", "dir", 1)]
    assert storages[0]["avail"] > 0
    volumes = admin.get(f"/nodes/{NODE}/storage/local/content", params={"vmid": VMID}).json()["data"]
    assert {(item["volid"], item["format"], item["size"]) for item in volumes} == {
        (f"local:{VMID}/vm-{VMID}-disk-0.qcow2", "qcow2", 2**40),
        (f"local:{VMID}/vm-{VMID}-disk-1.raw", "raw", 10737664)}
    assert admin.get(f"/nodes/{NODE}/storage/local/content", params={"content": "iso"}).json()["data"] == []
    assert "storage" in _errors(admin.get(f"/nodes/{NODE}/storage/nothere/content"))


def test_the_cache_plan_per_disk_and_layer(admin: Api) -> None:
    plan = admin.get(vm_path("/qcow2-cache")).json()["data"]
    assert plan["options"]["qcow2-l2-cache-entry-size"]["minimum"] == 512
    assert plan["options"]["qcow2-cache-size"]["unit"] == "MiB"
    disks = {disk["key"]: disk for disk in plan["disks"]}
    assert (disks["scsi1"]["format"], disks["scsi1"]["layers"]) == ("raw", [])
    [layer] = disks["scsi0"]["layers"]
    assert layer["virtual-size"] == 2**40 and layer["applied"] is None
    # QEMU's default covers a quarter of 1 TiB; the size based on disk all of it.
    assert layer["default"]["l2-coverage"] == 2**38 and layer["default"]["memory"] == 32 * 2**20 + 4 * 65536
    assert layer["configured"]["covers-disk"] is True
    assert layer["configured"]["options"] == {"cache-size": layer["auto"]["cache-size"]}


def _preview(api: Api, drive: str, disk: str = "scsi0") -> dict[str, Any]:
    response = api.post(vm_path("/qcow2-cache/preview"), json={"disk": disk, "drive": drive})
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def test_preview_gives_the_errors_per_property_or_what_the_cache_would_cover(admin: Api) -> None:
    disk = f"local:{VMID}/vm-{VMID}-disk-0.qcow2"
    bad = _preview(admin, f"{disk},qcow2-l2-cache-entry-size=1000,cache=fast")
    assert bad["errors"] == {"qcow2-l2-cache-entry-size": "must be a power of two",
                             "cache": "value 'fast' does not have a value in the enumeration "
                                      "'none, writethrough, writeback, unsafe, directsync'"}
    assert bad["layers"] == []
    too_big = _preview(admin, f"{disk},qcow2-l2-cache-entry-size=131072")
    assert "the cluster size" in str(too_big["errors"]["qcow2-l2-cache-entry-size"])
    half = _preview(admin, f"{disk},qcow2-l2-cache-size=64")
    assert (half["errors"], half["format"]) == ({}, "qcow2")
    [layer] = half["layers"]
    assert layer["edited"]["coverage-percent"] == 50.0 and layer["edited"]["memory"] == 64 * 2**20 + 4 * 65536
    assert half["values"] == {"file": disk, "qcow2-l2-cache-size": "64"}
    # The format comes from the volume: no format= in the string.
    raw = _preview(admin, f"local:{VMID}/vm-{VMID}-disk-1.raw")
    assert (raw["format"], raw["layers"]) == ("raw", [])
    new = _preview(admin, "local:4,format=qcow2,qcow2-cache-size-based-on-disk=1")
    assert new["new"] is True and new["layers"][0]["edited"]["covers-disk"] is True
    missing = _preview(admin, "nowhere:100/vm-100-disk-9.qcow2")
    assert missing["errors"] == {"file": "scsi0: storage 'nowhere' does not exist"}
    assert _errors(admin.post(vm_path("/qcow2-cache/preview"), data={"disk": "scsi99", "drive": disk})) == {
        "disk": "'scsi99' is not a drive key"}
    assert _errors(admin.post(vm_path("/qcow2-cache/preview"), data={"disk": "scsi0"})) == {
        "drive": "property is missing and it is not optional"}


def test_preview_covers_every_layer_of_a_chain(admin: Api, web_home: WebHome) -> None:
    images = web_home.settings.home / "storage" / "local" / "images" / str(VMID)
    base, overlay = images / "base-100-disk-7.qcow2", images / "vm-100-disk-7.qcow2"
    for argv in (["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64G"],
                 ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", str(overlay)]):
        subprocess.run(argv, check=True, cwd=images)
    try:
        preview = _preview(admin, f"local:{VMID}/{overlay.name},qcow2-cache-size-based-on-disk=1")
        layers = preview["layers"]
        assert [(layer["depth"], Path(layer["filename"]).name) for layer in layers] == [
            (0, overlay.name), (1, base.name)]
        assert all(layer["edited"]["covers-disk"] for layer in layers)
        # Explicit sizes apply to the top image only; the backing image keeps QEMU's default.
        explicit = _preview(admin, f"local:{VMID}/{overlay.name},qcow2-l2-cache-size=1")["layers"]
        assert [layer["edited"]["options"] for layer in explicit] == [
            {"l2-cache-size": 2**20}, {}]
    finally:
        overlay.unlink()
        base.unlink()


def test_answers_are_never_cached_and_errors_have_no_traceback(admin: Api) -> None:
    response = admin.get(vm_path("/config"))
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    broken = admin.put(vm_path("/config"), data=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "Traceback" not in broken.text
    assert json.loads(broken.text) == {"data": None, "message": "the JSON body cannot be read"}

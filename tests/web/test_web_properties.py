"""Property test of the web API: random methods, paths (every route of both servers, with
random or real path parameters), query strings, headers, cookies and bodies against a
real server on a loopback port, `qdisk serve` and `qdisk serve --pve`. Whatever is sent,
the answer is never a 5xx and never a traceback; an API answer is Proxmox VE's JSON.

Nothing here may start QEMU: VM 100 of the home has a disk on a disabled storage, so
`status/start` is refused (400) whatever else the examples change.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qdisk import storage
from qdisk.pve.access.usercfg import is_userid, split_tokenid
from qdisk.settings import Settings, Tools
from qdisk.vm import changes, store
from qdisk.web import homeapi, pveapi, sessions, tokens
from qdisk.web.api import API_PREFIX
from qdisk.web.http import node_name

from pve_helpers import OTHER_NODE, THIS_NODE
from web_helpers import make_pve_home, running_server

# Bounded: the whole test stays within seconds per server.
EXAMPLES = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
TIMEOUT = 60
NOT_SERVED = "not served on a Proxmox VE host (qdisk serve --pve)"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
# Names an endpoint knows, so examples reach past "unknown parameter" too.
PARAMETER_NAMES = ["delete", "digest", "memory", "name", "scsi0", "scsi1", "virtio3", "efidisk0",
                   "disk", "drive", "settings", "token", "timeout", "current", "content", "vmid",
                   "revert", "skiplock", "onboot", "description", "machine", "boot"]
SAMPLE_VALUES = ["", "1", "0", "-1", "100", "0100", "local:1", "local:1,format=qcow2",
                 "local:100/vm-100-disk-0.qcow2,qcow2-l2-cache-size=64", "/etc/shadow,format=qcow2",
                 "qcow2-cache-size-based-on-disk=1", "qcow2-l2-cache-entry-size=1000", "scsi0",
                 "cache=fast", "x" * 9000, "\u00ff\u2603", "%00", "a=b=c,,,", "1e400", "NaN"]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain",
                 "multipart/form-data", "application/json; charset=latin-1", ""]
# Header values a client can send: printable ASCII, no blank at either end.
HEADER_TEXT = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + " ",
                      max_size=60).map(str.strip)


@dataclass(frozen=True)
class Target:
    """A server, its routes (method, path template), its real path values and tokens."""

    url: str
    routes: list[tuple[str, str]]
    nodes: list[str]
    vmids: list[str]
    tokens: list[str]


def _routes(pve: bool) -> list[tuple[str, str]]:
    """Every (method, path) the server answers: the login's, QDISK_HOME's (501 with
    ``--pve``), the host's, and /version."""
    routers = [sessions.router, homeapi.router, *([pveapi.router] if pve else [])]
    return sorted({("GET", f"{API_PREFIX}/version"), *(
        (method, f"{API_PREFIX}{route.path}") for router in routers for route in router.routes
        if isinstance(route, APIRoute) for method in route.methods or ())})


@pytest.fixture(scope="module")
def home_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("web-properties")
    settings = Settings(home=root / "qdisk-home", tools=Tools())
    storage.ensure_default(settings)
    off = root / "off"
    off.mkdir()
    with storage.config_path(settings).open("a") as cfg:
        cfg.write(f"\ndir: off\n\tpath {off}\n\tcontent images\n\tdisable 1\n")
    changes.create(settings, 100, {"name": "db", "memory": "64", "scsi0": "local:1,format=qcow2"})
    with store.config_path(settings, 100).open("a") as config:  # vm set refuses it: by hand
        config.write("virtio7: off:100/vm-100-disk-9.raw\n")
    admin, reader = tokens.create(settings, "admin"), tokens.create(settings, "reader", read_only=True)
    with running_server(settings) as url:
        yield Target(url, _routes(pve=False), [node_name()], ["100"], [admin, reader])


@pytest.fixture(scope="module")
def pve_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    home = make_pve_home(tmp_path_factory.mktemp("web-properties-pve"))
    try:
        with running_server(home.settings, pve=home.host) as url:
            yield Target(url, _routes(pve=True), [THIS_NODE, OTHER_NODE],
                         ["100", "101", "102", "200"], [home.admin_token, home.reader_token])
    finally:
        home.tree.kill_all()


def _mostly(draw: st.DrawFn, usual: st.SearchStrategy[str],
            *others: st.SearchStrategy[str]) -> str:
    """A draw of ``usual`` three times in four: examples reach the handlers' own checks
    instead of stopping at routing."""
    return draw(usual if draw(st.sampled_from([True, True, True, False])) else st.one_of(*others))


def _segment(draw: st.DrawFn, real: list[str]) -> str:
    return _mostly(draw, st.sampled_from(real),
                   st.sampled_from(["0100", "+100", "100.0", "-5", "99"]),
                   st.text(max_size=20).map(lambda text: quote(text, safe="")))


@st.composite
def requests_to(draw: st.DrawFn, target: Target) -> dict[str, object]:
    kind = draw(st.sampled_from(["route"] * 6 + ["odd", "random"]))
    method, template = draw({"route": st.sampled_from(target.routes), "odd": st.tuples(
        st.sampled_from(METHODS), st.sampled_from(
            ["/", "/static/qdisk.js", "/static/../../etc/passwd", "/api2/json", "/api2/openapi.json",
             "/api2/json/nodes/{node}/qemu/{vmid}/nowhere", "/api2/extjs/version"])),
        "random": st.tuples(st.sampled_from(METHODS), st.text(max_size=30).map(
            lambda text: "/api2/json/" + quote(text, safe="/")))}[kind])
    method = _mostly(draw, st.just(method), st.sampled_from(METHODS))
    path = (template.replace("{node}", _segment(draw, target.nodes))
            .replace("{vmid}", _segment(draw, target.vmids))
            .replace("{storage}", _segment(draw, ["local", "off", "ceph"])))
    names = st.one_of(st.sampled_from(PARAMETER_NAMES), st.text(max_size=12))
    values = st.one_of(st.sampled_from(SAMPLE_VALUES), st.text(max_size=40))
    pairs = st.lists(st.tuples(names, values), max_size=6)
    headers: dict[str, str] = {}
    credential = draw(st.sampled_from(["admin", "admin", "reader", "none", "garbage"]))
    if credential in ("admin", "reader"):
        headers["Authorization"] = "PVEAPIToken=" + target.tokens[credential == "reader"]
    elif credential == "garbage":
        headers["Authorization"] = draw(HEADER_TEXT)
    for name, value in draw(st.lists(st.tuples(
            st.sampled_from(["CSRFPreventionToken", "Cookie", "Content-Type", "X-Forwarded-For",
                             "Accept", "Transfer-Encoding", "Expect"]), HEADER_TEXT), max_size=3)):
        headers[name] = value
    body_kind = draw(st.sampled_from(["none", "form", "json", "json-any", "bytes"]))
    body: bytes | None = None
    if body_kind == "form":
        body = "&".join(f"{quote(name)}={quote(value)}" for name, value in draw(pairs)).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif body_kind == "json":
        body = ("{" + ",".join(f"{json.dumps(name)}: {json.dumps(value)}"
                               for name, value in draw(pairs)) + "}").encode()
        headers.setdefault("Content-Type", "application/json")
    elif body_kind == "json-any":
        body = json.dumps(draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
            max_leaves=8))).encode()
        headers.setdefault("Content-Type", draw(st.sampled_from(CONTENT_TYPES)))
    elif body_kind == "bytes":
        body = draw(st.binary(max_size=200))
        headers.setdefault("Content-Type", draw(st.sampled_from(CONTENT_TYPES)))
    headers.pop("Transfer-Encoding", None)  # requests frames the body itself
    query = "&".join(f"{quote(name)}={quote(value)}" for name, value in draw(pairs))
    return {"method": method, "path": path + (f"?{query}" if query else ""),
            "headers": headers, "body": body}


def _check(target: Target, request: dict[str, object]) -> None:
    response = requests.request(str(request["method"]), f"{target.url}{request['path']}",
                                headers=request["headers"], data=request["body"],  # type: ignore[arg-type]
                                timeout=TIMEOUT, allow_redirects=False)
    event(f"{request['method']} answered {response.status_code}")
    # The one 5xx by design: QDISK_HOME's endpoints on a Proxmox VE host, Proxmox VE's
    # 501 for a method it does not implement.
    not_served = response.status_code == 501 and NOT_SERVED in response.json()["message"]
    assert response.status_code < 500 or not_served, (request, response.status_code,
                                                      response.text[:2000])
    assert "Traceback" not in response.text, (request, response.text[:2000])
    path = str(request["path"])
    if path.startswith("/api2/json/") and request["method"] != "HEAD" and response.status_code != 405:
        body = response.json()
        assert isinstance(body, dict) and "data" in body, (request, body)


@EXAMPLES
@given(data=st.data())
def test_qdisk_serve_answers_anything_without_a_5xx_or_a_traceback(
        home_target: Target, data: st.DataObject) -> None:
    _check(home_target, data.draw(requests_to(home_target)))


@EXAMPLES
@given(data=st.data())
def test_qdisk_serve_pve_answers_anything_without_a_5xx_or_a_traceback(
        pve_target: Target, data: st.DataObject) -> None:
    _check(pve_target, data.draw(requests_to(pve_target)))


def test_the_routes_cover_both_servers(home_target: Target, pve_target: Target) -> None:
    """The examples are drawn from every route: the lists are the applications' own."""
    assert ("PUT", "/api2/json/nodes/{node}/qemu/{vmid}/config") in home_target.routes
    assert ("POST", "/api2/json/nodes/{node}/qemu/{vmid}/status/start") in home_target.routes
    assert ("PUT", "/api2/json/nodes/{node}/qemu/{vmid}/qdisk/cache") in pve_target.routes
    assert ("POST", "/api2/json/access/ticket") in pve_target.routes
    assert len(home_target.routes) >= 15 and len(pve_target.routes) >= 15


def test_vm_100_cannot_start(home_target: Target) -> None:
    """What keeps QEMU out of the examples holds."""
    response = requests.post(f"{home_target.url}/api2/json/nodes/{node_name()}/qemu/100/status/start",
                             headers={"Authorization": "PVEAPIToken=" + home_target.tokens[0]},
                             timeout=TIMEOUT)
    assert response.status_code == 400 and "disabled" in response.text, response.text


# --- user and token ids: Proxmox VE's rules, the same for qdisk's tokens and user.cfg -------

SECRET = "3f8e1c2a-6b1d-4c55-9a0e-1d2c3b4a5f60"


def test_user_and_token_ids_follow_proxmox_ves_rules() -> None:
    """pve-userid: ``[^\\s:/]+@REALM``, at most 64 characters; a realm and a token's name:
    a letter, then at least one of letters, digits, '.', '-', '_'."""
    for userid in ("root@pam", "a=b@pve", "a@b@pve", "a!b@pve", f"{'x' * 60}@pve"):
        assert is_userid(userid), userid
    for userid in ("a:b@pam", "a/b@pam", "a b@pam", "a@1pve", "a@p", "@pve", f"{'x' * 61}@pve"):
        assert not is_userid(userid), userid
    assert split_tokenid("a!b@pve!web2") == ("a!b@pve", "web2")
    for tokenid in ("root@pam!w", "root@pam!9web", "root@pam!we!b", "root@pam", "a:b@pam!web"):
        assert split_tokenid(tokenid) is None, tokenid


@given(st.text(alphabet="ab9@!=:/ _.-", max_size=12), st.sampled_from(["pam", "pve", "1x", "p", ""]),
       st.sampled_from(["web", "ok-1.x_", "w", "9web", "a=b", "a@b", "a!b", ""]))
def test_qdisk_tokens_take_exactly_the_ids_user_cfg_takes(name: str, realm: str, token: str) -> None:
    user = f"{name}@{realm}"
    try:
        made: str | None = tokens.token_id_of(token, user)
    except tokens.TokenError:
        made = None
    taken = is_userid(user) and split_tokenid(f"{user}!{token}") == (user, token)
    assert made == (f"{user}!{token}" if taken else None)
    if made is not None:
        assert tokens.parse_token_line(f"{made}={SECRET}") == (made, SECRET)

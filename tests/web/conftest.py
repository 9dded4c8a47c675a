"""Fixtures of the web area (helpers in web_helpers.py): one home and one server per
module; every QEMU a test starts is killed when the module ends, also after a failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from web_helpers import Api, WebHome, make_web_home, running_server


@pytest.fixture(scope="module")
def web_home(tmp_path_factory: pytest.TempPathFactory) -> WebHome:
    return make_web_home(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def server_url(web_home: WebHome) -> Iterator[str]:
    with running_server(web_home.settings) as url:
        yield url


@pytest.fixture
def admin(server_url: str, web_home: WebHome) -> Api:
    return Api(server_url, web_home.admin_token)


@pytest.fixture
def reader(server_url: str, web_home: WebHome) -> Api:
    return Api(server_url, web_home.reader_token)


@pytest.fixture
def anonymous(server_url: str) -> Api:
    return Api(server_url)

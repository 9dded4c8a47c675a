"""Fixtures of the web area (helpers in web_helpers.py): one home and one server per
module; every QEMU a test starts is killed when the module ends, also after a failure;
one browser per module, a page whose script must not fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from web_helpers import Api, WebHome, make_web_home, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 30_000
expect.set_options(timeout=UI_TIMEOUT_MS)


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """``open_page(url, cookies=None, trusted_certificate=False)``: a page in a fresh
    context (with those cookies, as Playwright's ``add_cookies`` takes them; trusting the
    test's self-signed certificate); closed after the test, which fails if the page's
    script failed."""
    contexts = []
    errors: list[str] = []

    def open_at(url: str, cookies: list[dict[str, Any]] | None = None,
                trusted_certificate: bool = False) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      ignore_https_errors=trusted_certificate)
        contexts.append(context)
        if cookies:
            context.add_cookies(cookies)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        return page

    try:
        yield open_at
    finally:
        for context in contexts:
            context.close()
    assert errors == [], f"the page's script failed: {errors}"

"""The page in a real browser (Debian's Chromium driven by Playwright): log in, start the
VM, edit its qcow2 disk's cache with errors shown as one types, save it live, see a
pending change marked, stop the VM.

``QDISK_EDITOR_SCREENSHOT=docs/editor.png`` also writes the editor's screenshot there
(the README's picture); otherwise it goes to the test's tmp directory only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from qdisk.vm import changes, views

from web_helpers import VMID, WebHome

pytestmark = pytest.mark.qemu

SCREENSHOT_ENV = "QDISK_EDITOR_SCREENSHOT"
# Starting and stopping QEMU under TCG on a loaded machine takes a while; so may a live
# change over QMP, which the page waits for before it says anything.
VM_TIMEOUT_MS = 90_000
MIB = 2**20


@pytest.fixture
def page(open_page: Callable[[str], Page], server_url: str) -> Page:
    return open_page(server_url)


def _login(page: Page, token: str) -> None:
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#token-input", token)
    page.click("#login-button")
    expect(page.locator("#vm-table tbody tr")).to_have_count(1)


def _edit(page: Page, key: str) -> None:
    page.click(f"[data-edit={key}]")
    expect(page.locator("#disk-editor")).to_be_visible()


def _coverage(page: Page, kind: str) -> str | None:
    fill = page.locator(f"#gauge .gauge-layer[data-depth='0'] .gauge-row.{kind} .fill")
    return fill.get_attribute("data-coverage") if fill.count() else None


def test_a_wrong_token_is_refused_at_login(page: Page) -> None:
    page.fill("#token-input", "root@pam!admin=not-the-secret")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("authentication failure")
    expect(page.locator("#main-view")).to_be_hidden()


def test_config_values_are_shown_as_text_never_as_markup(page: Page, web_home: WebHome) -> None:
    markup = '<img src="x" onerror="document.title=1">'
    changes.set_options(web_home.settings, VMID, {"description": markup})
    try:
        _login(page, web_home.admin_token)
        page.get_by_role("link", name="db").click()
        expect(page.locator("#hardware tr[data-key='description']")).to_contain_text(markup)
        assert page.locator("#hardware img").count() == 0 and page.title() == "qdisk"
    finally:
        changes.set_options(web_home.settings, VMID, {}, ["description"])


def test_edit_the_qcow2_cache_of_a_running_vm(page: Page, web_home: WebHome, tmp_path: Path) -> None:
    _login(page, web_home.admin_token)
    row = page.locator(f"#vm-table tbody tr[data-vmid='{VMID}']")
    expect(row).to_contain_text("stopped")
    row.get_by_role("button", name="Start").click()
    expect(row).to_contain_text("running", timeout=VM_TIMEOUT_MS)
    row.get_by_role("link", name="db").click()
    expect(page.locator("#vm-status")).to_have_text("running")

    _edit(page, "scsi0")
    # The volume's name says qcow2 (the string has no format=): the cache section is on.
    expect(page.locator("#field-format")).to_have_value("qcow2")
    expect(page.locator("#qcow2-cache")).not_to_have_attribute("disabled", "")
    auto = page.locator("#field-qcow2-cache-size-based-on-disk")
    l2_size = page.locator("#field-qcow2-l2-cache-size")
    expect(auto).to_be_checked()
    for key in ("qcow2-cache-size", "qcow2-l2-cache-size", "qcow2-refcount-cache-size"):
        expect(page.locator(f"#field-{key}")).to_be_disabled()
    expect(page.locator("#field-qcow2-l2-cache-entry-size")).to_be_enabled()
    assert (_coverage(page, "now"), _coverage(page, "edited")) == ("100", "100")
    auto.uncheck()
    expect(l2_size).to_be_enabled()
    # Without the size based on disk QEMU's default covers a quarter of the 1 TiB disk.
    expect(page.locator("#gauge .gauge-row.edited .fill")).to_have_attribute("data-coverage", "25")

    entry_size = page.locator("#field-qcow2-l2-cache-entry-size")
    entry_size.fill("1000")
    expect(page.locator("#error-qcow2-l2-cache-entry-size")).to_have_text("must be a power of two")
    entry_size.fill("")
    expect(page.locator("#error-qcow2-l2-cache-entry-size")).to_have_text("")
    l2_size.fill("64")
    expect(page.locator("#gauge .gauge-row.edited .fill")).to_have_attribute("data-coverage", "50")
    expect(page.locator("#gauge .gauge-row.edited")).to_contain_text("memory 64.3 MiB")
    assert _coverage(page, "now") == "100"
    _screenshot(page, tmp_path)

    page.click("#editor-ok")
    expect(page.locator("#disk-editor")).to_be_hidden()
    expect(page.locator("#vm-message")).to_contain_text("scsi0: applied live to the running VM")
    config = web_home.config_file.read_text()
    assert "qcow2-l2-cache-size=64" in config and "qcow2-cache-size-based-on-disk" not in config
    applied = views.status(web_home.settings, VMID).state.disks["scsi0"][0].cache  # type: ignore[union-attr]
    assert applied == {"l2-cache-size": 64 * MIB}

    # The gauge's "now" is what the running VM got.
    _edit(page, "scsi0")
    expect(page.locator("#gauge .gauge-row.now .fill")).to_have_attribute("data-coverage", "50")
    # A cache mode cannot change while QEMU runs: pending, marked red in the hardware view.
    page.select_option("#field-cache", "writeback")
    page.click("#editor-ok")
    expect(page.locator("#vm-message")).to_contain_text("pending until the next start")
    pending = page.locator("#hardware tr[data-key='scsi0'] .pending")
    expect(pending).to_contain_text("cache=writeback")
    expect(page.locator("#hardware tr[data-key='scsi0'] .current")).not_to_contain_text("writeback")

    # A raw volume: the qcow2 cache section is off.
    _edit(page, "scsi1")
    for field in page.locator("#qcow2-cache input").all():
        expect(field).to_be_disabled()
    expect(page.locator("#qcow2-hint")).to_contain_text("The volume is raw")
    page.click("#editor-cancel")

    page.click("#vm-stop")
    expect(page.locator("#vm-status")).to_have_text("stopped", timeout=VM_TIMEOUT_MS)
    # Stopping applies nothing: the change waits for the next start.
    assert "[PENDING]" in web_home.config_file.read_text()


def _screenshot(page: Page, tmp_path: Path) -> None:
    """The editor as a user sees it; copied to $QDISK_EDITOR_SCREENSHOT when that is set."""
    shot = tmp_path / "editor.png"
    box = page.locator("#disk-editor").bounding_box()
    assert box is not None
    margin = 12
    page.screenshot(path=str(shot), clip={"x": box["x"] - margin, "y": box["y"] - margin,
                                          "width": box["width"] + 2 * margin,
                                          "height": box["height"] + 2 * margin})
    assert shot.stat().st_size > 10_000
    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        shutil.copyfile(shot, target)

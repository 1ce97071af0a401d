"""The control page in a real headless Chromium (Debian `chromium` + `chromium-driver`, via selenium):
sign in with a token, restart a simulated guest with confirmation, see it succeed in the history.

Locally it skips when Chromium is not installed; under CI=true a missing browser fails (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from tests.controlharness import TOKENS
from tests.servers import require_binary, wait_until
from tests.threadstack import ThreadedStack

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]  # fmt: skip


@pytest.fixture
def browser(tmp_path: Path):
    chromium = require_binary("chromium", "chromium")
    chromedriver = require_binary("chromedriver", "chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(tmp_path / "driver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def api(stack: ThreadedStack, path: str) -> dict:
    req = urllib.request.Request(stack.url + path, headers={"Authorization": f"Bearer {TOKENS['viewer'][0]}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_sign_in_restart_a_guest_and_see_it_succeed(tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    def find(css: str):
        return browser.find_element(By.CSS_SELECTOR, css)

    def visible(css: str) -> bool:
        els = browser.find_elements(By.CSS_SELECTOR, css)
        return bool(els) and els[0].is_displayed()

    with ThreadedStack(tmp_path) as stack:
        browser.get(stack.url + "/")
        find("a[href='ui/']").click()
        wait_until(lambda: visible("#token-input"), timeout=10, what="the sign-in form")

        # a wrong token is refused on the page, and nothing is kept
        find("#token-input").send_keys("not-a-valid-token")
        find("#login-button").click()
        wait_until(lambda: visible("#login-error"), timeout=10, what="the sign-in error")
        assert "UNAUTHORIZED" in find("#login-error").text
        assert browser.execute_script("return window.sessionStorage.length") == 0

        find("#token-input").clear()
        find("#token-input").send_keys(TOKENS["ops"][0])
        find("#login-button").click()
        wait_until(lambda: visible("#app"), timeout=10, what="the signed-in page")
        assert find("#session-user").text == "ops" and "power" in find("#session-scopes").text
        row = "#guests tr[data-key='lab/102']"
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, row), timeout=10, what="guest lab/102")
        assert "odd name" in find(row).text and "running" in find(row).text
        assert find("#guests tr[data-key='lab/104'] button[data-action='start']").get_attribute("disabled")  # template
        # the token lives in this tab's session storage only
        assert browser.execute_script("return window.sessionStorage.getItem('pve_exporter.control.token')") == \
            TOKENS["ops"][0]
        assert browser.execute_script("return window.localStorage.length") == 0 and not browser.get_cookies()

        # filter the list: only containers
        find("#f-type option[value='lxc']").click()
        find("#refresh-guests").click()
        wait_until(lambda: not browser.find_elements(By.CSS_SELECTOR, row), timeout=10, what="the lxc filter")
        assert browser.find_elements(By.CSS_SELECTOR, "#guests tr[data-key='lab/111']")
        find("#f-type option[value='']").click()
        find("#refresh-guests").click()
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, row), timeout=10, what="all guests again")

        # restart, cancel first, then confirm
        find(f"{row} button[data-action='restart']").click()
        wait_until(lambda: visible("#confirm"), timeout=10, what="the confirmation dialog")
        assert "Restart" in find("#confirm-title").text and "102" in find("#confirm-title").text
        find("#confirm-cancel").click()
        wait_until(lambda: not visible("#confirm"), timeout=5, what="the dialog to close")
        assert api(stack, "/api/v1/operations")["total"] == 0
        find(f"{row} button[data-action='restart']").click()
        wait_until(lambda: visible("#confirm"), timeout=10, what="the confirmation dialog")
        find("#confirm-ok").click()

        followed = "#followed li[data-status]"
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, followed), timeout=10, what="the followed operation")
        op = wait_until(lambda: (api(stack, "/api/v1/operations")["operations"] or [None])[0], timeout=10,
                        what="the operation in the history")
        assert (op["cluster"], op["resource_id"], op["operation"], op["user"]) == ("lab", 102, "restart", "ops")
        wait_until(lambda: api(stack, f"/api/v1/operations/{op['id']}")["upid"], timeout=10, what="the PVE task")
        stack.clock.t += 60  # the simulated reboot takes ~11 s
        wait_until(lambda: find(followed).get_attribute("data-status") == "succeeded", timeout=20,
                   what="the page to show the operation succeeded")
        assert "restart lab/102" in find(followed).text

        hist = f"#history tr[data-id='{op['id']}']"
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, hist)
                   and find(hist).get_attribute("data-status") == "succeeded", timeout=10,
                   what="the history row to show succeeded")  # fmt: skip
        assert "ops" in find(hist).text and "restart" in find(hist).text

        # history filters: nothing failed, one restart
        find("#h-status option[value='failed']").click()
        find("#history-apply").click()
        wait_until(lambda: not browser.find_elements(By.CSS_SELECTOR, hist), timeout=10, what="the status filter")
        assert find("#history-page").text.endswith("of 0")
        find("#h-status option[value='']").click()
        find("#h-operation option[value='restart']").click()
        find("#history-apply").click()
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, hist), timeout=10, what="the action filter")
        browser.save_screenshot(str(tmp_path / "control-page.png"))

        # sign out: the token is gone
        find("#logout").click()
        wait_until(lambda: visible("#token-input"), timeout=5, what="the sign-in form again")
        assert browser.execute_script("return window.sessionStorage.length") == 0

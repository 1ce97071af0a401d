"""The control page in a real headless Chromium (Debian `chromium` + `chromium-driver`, via selenium),
against the daemon and the simulator on 127.0.0.1: sign in, the cluster header and guest figures,
state-aware buttons, a confirmed stop that ends `succeeded`, a task log that grows, a bulk dry run
then run then cancel, and a read-only token that sees no power buttons. The screenshots go to the test's
temp directory, or to $PVE_EXPORTER_SCREENSHOTS (`make screenshots` refreshes the committed docs/img/).

Locally it skips when Chromium is not installed; under CI=true a missing browser fails (.ci/run installs it).
Chromium runs with --no-sandbox: its sandbox cannot start as root (containers, CI).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.controlharness import TOKENS
from tests.servers import require_binary, wait_until
from tests.threadstack import ThreadedStack

SCREENSHOTS = os.environ.get("PVE_EXPORTER_SCREENSHOTS")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,800", "--hide-scrollbars"]  # fmt: skip


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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP violations
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(tmp_path / "driver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The page as a user drives it: CSS lookups with deadlines, never fixed sleeps."""

    def __init__(self, driver: Any, stack: ThreadedStack) -> None:
        from selenium.webdriver.common.by import By

        self.d = driver
        self.stack = stack
        self.img = Path(SCREENSHOTS) if SCREENSHOTS else stack.tmp / "screenshots"
        self.by = By.CSS_SELECTOR

    def find(self, css: str) -> Any:
        return self.d.find_element(self.by, css)

    def all(self, css: str) -> list[Any]:
        return self.d.find_elements(self.by, css)

    def visible(self, css: str) -> bool:
        els = self.all(css)
        return bool(els) and els[0].is_displayed()

    def wait(self, predicate: Any, what: str, timeout: float = 15) -> Any:
        return wait_until(predicate, timeout=timeout, interval=0.05, what=what)

    def wait_visible(self, css: str, timeout: float = 15) -> Any:
        self.wait(lambda: self.visible(css), css, timeout)
        return self.find(css)

    def sign_in(self, who: str) -> None:
        self.d.get(self.stack.url + "/ui/")
        self.wait_visible("#token-input").send_keys(TOKENS[who][0])
        self.find("#login-button").click()
        self.wait_visible("#app")
        self.wait(lambda: self.all("#guests tr[data-key='lab/102']"), "the guest rows")

    def row(self, key: str) -> str:
        return f"#guests tr[data-key='{key}']"

    def button(self, key: str, action: str) -> Any:
        return self.find(f"{self.row(key)} button[data-action='{action}']")

    def refresh(self) -> None:
        self.find("#refresh-guests").click()

    def cycle(self) -> None:
        """A collection cycle now (the pollers' own schedule follows the test's frozen clock)."""
        self.stack.run(self.stack.daemon.clusters["lab"].poller.run_once())

    def shot(self, name: str) -> None:
        self.img.mkdir(parents=True, exist_ok=True)
        assert self.d.save_screenshot(str(self.img / name))
        assert (self.img / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def api(stack: ThreadedStack, path: str, *, method: str = "GET", body: Any = None, who: str = "viewer") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.url + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKENS[who][0]}",
                                          "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_sign_in_header_state_aware_buttons_and_a_confirmed_stop(tmp_path: Path, browser) -> None:
    with ThreadedStack(tmp_path) as stack:
        page = Page(browser, stack)
        browser.get(stack.url + "/")
        page.find("a[href='ui/']").click()
        page.wait_visible("#token-input")

        # a wrong token is refused on the page, and nothing is kept
        page.find("#token-input").send_keys("not-a-valid-token")
        page.find("#login-button").click()
        assert "UNAUTHORIZED" in page.wait_visible("#login-error").text
        assert browser.execute_script("return window.sessionStorage.length") == 0
        page.find("#token-input").clear()
        page.sign_in("ops")
        assert page.find("#session-user").text == "ops" and "power" in page.find("#session-scopes").text
        assert browser.execute_script("return window.sessionStorage.getItem('pve_exporter.control.token')") == \
            TOKENS["ops"][0]
        assert browser.execute_script("return window.localStorage.length") == 0 and not browser.get_cookies()

        # the compact cluster header
        guests = api(stack, "/api/v1/guests")["guests"]
        running = sum(g["status"] == "running" for g in guests)
        head = page.find("#cluster-summary li[data-cluster='lab']").text
        assert "ok" in head and "nodes 3/3 online" in head and f"guests {running}/12 running" in head
        assert "no collector failing" in head and "data" in head

        # figures and state-aware buttons
        row = page.row("lab/102")
        assert "odd name" in page.find(row).text and "running" in page.find(row).text
        assert page.find(f"{row} td[data-col='cpu']").text.endswith("%")
        assert "figures 0 s old" in page.find(f"{row} td[data-col='cpu']").get_attribute("title")
        assert "/" in page.find(f"{row} td[data-col='mem']").text
        start = page.button("lab/102", "start")
        assert start.get_attribute("disabled") and "already running" in start.get_attribute("title")
        assert not page.button("lab/102", "stop").get_attribute("disabled")
        assert not page.button("lab/102", "restart").get_attribute("disabled")
        for action in ("start", "stop", "restart"):  # a template: greyed, the reason in the tooltip
            b = page.button("lab/104", action)
            assert b.get_attribute("disabled") and "templates" in b.get_attribute("title")
        assert not page.button("lab/101", "start").get_attribute("disabled")  # stopped
        assert "not running" in page.button("lab/101", "stop").get_attribute("title")

        # a guest on an offline node: greyed with the reason
        fault = stack.sim.cluster("lab").add_fault("node_down", node="pve3")
        page.cycle()
        page.refresh()
        page.wait(lambda: page.button("lab/109", "stop").get_attribute("disabled"), "pve3's guests greyed")
        assert "node pve3 is offline" in page.button("lab/109", "stop").get_attribute("title")
        assert "nodes 2/3 online" in page.find("#cluster-summary li[data-cluster='lab']").text
        stack.sim.cluster("lab").remove_fault(fault.id)
        page.cycle()
        page.refresh()
        page.wait(lambda: "nodes 3/3" in page.find("#cluster-summary li[data-cluster='lab']").text, "pve3 back")

        # text filter and sorting (keyboard: "/" focuses the filter)
        page.find("body").send_keys("/")
        assert browser.switch_to.active_element.get_attribute("id") == "g-text"
        browser.switch_to.active_element.send_keys("dns")
        page.wait(lambda: len(page.all("#guests tbody tr[data-key]")) == 1, "the text filter")
        assert page.all(page.row("lab/103"))
        page.find("#g-text").clear()
        page.find("#g-text").send_keys(" ")  # an input event with an empty filter
        page.wait(lambda: len(page.all("#guests tbody tr[data-key]")) == 12, "all guests again")
        page.find("button.sort[data-sort='vmid']").click()  # sorted by VMID already: now descending
        page.wait(lambda: page.find("#guests tbody tr").get_attribute("data-key") == "lab/111", "descending")
        assert page.find("th[data-col='vmid']").get_attribute("aria-sort") == "descending"
        page.find("button.sort[data-sort='mem']").click()
        page.wait(lambda: page.find("th[data-col='mem']").get_attribute("aria-sort") == "ascending", "by memory")
        mems = [g["mem"] if g["mem"] is not None else -1 for g in guests]
        assert page.find("#guests tbody tr").get_attribute("data-key") == \
            f"lab/{min(guests, key=lambda g: (mems[guests.index(g)], g['vmid']))['vmid']}"

        # stop asks first, naming the guest, with a force choice; cancel changes nothing
        page.button("lab/102", "stop").click()
        page.wait_visible("#confirm")
        assert "Stop" in page.find("#confirm-title").text and "odd name" in page.find("#confirm-title").text
        assert "hard stop" in page.find("#confirm-force-label").text
        page.find("#confirm-cancel").click()
        page.wait(lambda: not page.visible("#confirm"), "the dialog to close")
        assert api(stack, "/api/v1/operations")["total"] == 0
        page.button("lab/102", "stop").click()
        page.wait_visible("#confirm")
        page.find("#confirm-ok").click()

        followed = "#followed li[data-status]"
        page.wait(lambda: page.all(followed), "the followed operation")
        op = page.wait(lambda: (api(stack, "/api/v1/operations")["operations"] or [None])[0], "the operation")
        assert (op["resource_id"], op["operation"], op["force"], op["user"]) == (102, "stop", False, "ops")
        page.wait(lambda: api(stack, f"/api/v1/operations/{op['id']}")["upid"], "the PVE task")
        stack.clock.t += 60  # the simulated guest shutdown takes ~8 s
        page.wait(lambda: page.find(followed).get_attribute("data-status") == "succeeded", "the stop to succeed")
        page.wait(lambda: page.find(page.row("lab/102")).get_attribute("data-status") == "stopped", "102 stopped")
        assert not page.button("lab/102", "start").get_attribute("disabled")
        hist = f"#history tr[data-id='{op['id']}']"
        page.wait(lambda: page.all(hist) and page.find(hist).get_attribute("data-status") == "succeeded", "history")

        # its task log, from the followed operation
        page.find(f"{followed} button.log").click()
        page.wait_visible("#log-dialog")
        page.wait(lambda: page.find("#log-text").text.endswith("TASK OK"), "the finished task log")
        page.find("#log-close").click()

        # sign out: the token is gone
        page.find("#logout").click()
        page.wait_visible("#token-input")
        assert browser.execute_script("return window.sessionStorage.length") == 0


def test_task_log_grows_while_the_task_runs(tmp_path: Path, browser) -> None:
    with ThreadedStack(tmp_path) as stack:
        page = Page(browser, stack)
        g = stack.sim.cluster("lab").guests[102]
        g.stop()
        g.lock = "suspended"  # hibernated: PVE logs "resuming VM from saved state", then runs ~3 s
        page.cycle()
        page.sign_in("ops")
        page.wait(lambda: not page.button("lab/102", "start").get_attribute("disabled"), "102 startable")
        page.button("lab/102", "start").click()  # start needs no confirmation
        op = page.wait(lambda: (api(stack, "/api/v1/operations")["operations"] or [None])[0], "the operation")
        page.wait(lambda: api(stack, f"/api/v1/operations/{op['id']}")["upid"], "the PVE task")
        page.wait(lambda: page.all("#followed li button.log"), "the task log button")
        page.find("#followed li button.log").click()
        page.wait_visible("#log-dialog")
        log = "#log-text"
        page.wait(lambda: page.find(log).get_attribute("data-lines") == "1", "the first line")
        assert page.find(log).text == "resuming VM from saved state"
        assert "refreshing" in page.find("#log-meta").text
        assert page.find(log).get_attribute("data-status") == "running"

        stack.clock.t += 10
        page.wait(lambda: page.find(log).get_attribute("data-lines") == "2", "the log to grow")
        assert page.find(log).text.splitlines() == ["resuming VM from saved state", "TASK OK"]
        page.wait(lambda: page.find(log).get_attribute("data-status") == "succeeded", "the operation's end")
        page.wait(lambda: "refreshing" not in page.find("#log-meta").text, "refreshing to stop")
        page.shot("control-page-log.png")
        page.find("#log-dialog").send_keys("\ue00c")  # Escape closes the dialog
        page.wait(lambda: not page.visible("#log-dialog"), "the log dialog to close")


def test_bulk_dry_run_then_run_then_cancel(tmp_path: Path, browser) -> None:
    with ThreadedStack(tmp_path) as stack:
        page = Page(browser, stack)
        guests = api(stack, "/api/v1/guests?cluster=lab")["guests"]
        ha = {100, 103}  # HA-managed in the simulator
        targets = [g["vmid"] for g in guests
                   if g["status"] == "running" and not g["template"] and g["vmid"] not in ha][:3]  # fmt: skip
        assert len(targets) == 3
        page.sign_in("ops")
        assert not page.visible("#bulk")
        for vmid in [*targets, 104, 101]:  # 104 a template, 101 stopped: skipped, with the reason
            page.find(f"{page.row(f'lab/{vmid}')} input.select").click()
        page.wait_visible("#bulk")
        assert page.find("#bulk-count").text == "5 selected"
        page.find("#bulk-action option[value='stop']").click()
        conc = page.find("#bulk-concurrency")
        conc.clear()
        conc.send_keys("1")
        page.find("#bulk-dry-run").click()
        page.wait_visible("#bulk-plan")
        would = [li.get_attribute("data-key") for li in page.all("#bulk-would-run li[data-key]")]
        assert sorted(would) == sorted(f"lab/{v}" for v in targets)
        assert "shutdown" in page.find("#bulk-would-run li").text
        skipped = {li.get_attribute("data-key"): li.get_attribute("data-reason")
                   for li in page.all("#bulk-skipped li[data-key]")}  # fmt: skip
        assert skipped == {"lab/104": "template", "lab/101": "already_stopped"}
        assert "3 would run, 2 skipped" in page.find("#bulk-plan-title").text
        assert api(stack, "/api/v1/operations")["total"] == 0  # a dry run changes nothing
        page.shot("control-page.png")

        page.find("#bulk-run").click()
        page.wait_visible("#bulk-progress")
        results = "#bulk-results li[data-status]"
        page.wait(lambda: any(li.get_attribute("data-status") == "running" for li in page.all(results)),
                  "the first member to run")  # fmt: skip
        assert len(page.all(results)) == 5  # three operations, two skipped with their reason
        assert page.find("#bulk-progress").get_attribute("data-total") == "3"
        page.find("#bulk-cancel").click()
        page.wait(lambda: sum(li.get_attribute("data-status") == "cancelled" for li in page.all(results)) == 2,
                  "the two queued members to be cancelled")  # fmt: skip
        assert "cancelled 2" in page.find("#message").text
        stack.clock.t += 60
        page.wait(lambda: page.find("#bulk-progress").get_attribute("data-state") == "done", "the batch to end")
        statuses = sorted(li.get_attribute("data-status") for li in page.all(results))
        assert statuses == ["cancelled", "cancelled", "skipped", "skipped", "succeeded"]
        text = page.find("#bulk-progress-text").text
        assert text.startswith("3 of 3 done") and "1 succeeded" in text and "2 cancelled" in text
        assert page.find("#bulk-bar").get_attribute("value") == "3"
        assert page.visible("#bulk-done") and not page.visible("#bulk-cancel")
        page.find("#bulk-results li[data-status='succeeded'] button.log").click()  # per-guest task log
        page.wait(lambda: page.find("#log-text").text.endswith("TASK OK"), "the member's task log")
        page.find("#log-close").click()
        page.find("#bulk-done").click()
        page.wait(lambda: not page.visible("#bulk"), "the bulk bar to close")


def test_read_only_token_sees_no_power_buttons_at_phone_width_and_in_the_dark(tmp_path: Path, browser) -> None:
    with ThreadedStack(tmp_path) as stack:
        page = Page(browser, stack)
        op = api(stack, "/api/v1/clusters/lab/guests/102/restart", method="POST", body={}, who="ops")
        page.wait(lambda: api(stack, f"/api/v1/operations/{op['id']}")["upid"], "the PVE task")
        page.sign_in("viewer")
        assert "read only" in page.find("#session-scopes").text
        assert not page.all("#guests button[data-action]") and not page.all("#guests input.select")
        assert not page.visible("#bulk") and not page.visible("#select-all")
        assert page.find("#guests tr[data-key='lab/102'] td[data-col='cpu']").text.endswith("%")
        # a read token still reads the history and the task logs
        hist = f"#history tr[data-id='{op['id']}'] button.log"
        page.wait(lambda: page.all(hist), "the history row's task log button")
        page.find(hist).click()
        page.wait(lambda: page.find("#log-text").get_attribute("data-status") == "running", "the running log")
        page.find("#log-close").click()

        browser.set_window_size(390, 844)  # a phone: the page itself never scrolls sideways
        page.wait(lambda: browser.execute_script("return window.innerWidth") <= 400, "the narrow window")
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert not page.find("th[data-col='uptime']").is_displayed()  # optional columns give way
        browser.execute_script("window.scrollTo(0, 0)")
        page.shot("control-page-phone.png")

        light = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert light == "rgb(255, 255, 255)" and dark != light
        assert sum(int(c) for c in dark[4:-1].split(",")) < 120  # a dark background

        # the strict Content-Security-Policy held: nothing refused, no script error on the console
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not [m for m in errors if "Content Security Policy" in m or "Uncaught" in m], errors


def test_keyboard_only_stop_and_an_unreachable_cluster(tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with ThreadedStack(tmp_path) as stack:
        page = Page(browser, stack)
        page.sign_in("ops")
        page.find("#g-text").click()
        target = "lab/102:stop"

        def focused() -> str | None:
            return browser.switch_to.active_element.get_attribute("data-focus-key")

        for _ in range(300):  # Tab through the page to the stop button of lab/102
            if focused() == target:
                break
            ActionChains(browser).send_keys(Keys.TAB).perform()
        assert focused() == target
        browser.execute_script("document.getElementById('guest-filters').requestSubmit()")  # a refresh redraws
        page.wait(lambda: focused() == target, "the focus to stay on the redrawn button")

        ActionChains(browser).send_keys(Keys.ENTER).perform()
        page.wait_visible("#confirm")
        assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"
        ActionChains(browser).send_keys(Keys.ESCAPE).perform()
        page.wait(lambda: not page.visible("#confirm"), "Escape to close the dialog")
        page.wait(lambda: focused() == target, "the focus back on the stop button")
        assert api(stack, "/api/v1/operations")["total"] == 0
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        page.wait_visible("#confirm")
        ActionChains(browser).send_keys(Keys.TAB).send_keys(Keys.ENTER).perform()  # Cancel → Stop
        op = page.wait(lambda: (api(stack, "/api/v1/operations")["operations"] or [None])[0], "the operation")
        assert (op["resource_id"], op["operation"], op["force"]) == (102, "stop", False)

        # PVE stops answering: the header says so, the last known guests stay listed
        lab = stack.sim.cluster("lab")
        lab.add_fault("http_error", path="/cluster/resources", status=500)
        lab.add_fault("http_error", path="/cluster/status", status=500)
        stack.clock.t += 1
        page.cycle()
        page.refresh()
        head = "#cluster-summary li[data-cluster='lab']"
        page.wait(lambda: page.find(head).get_attribute("data-health") == "unreachable", "the unreachable header")
        assert "unreachable" in page.find(head).text and "failing: " in page.find(head).text
        assert "last known" in page.find(head).get_attribute("title")
        assert len(page.all("#guests tbody tr[data-key]")) == 12
        cpu = page.find("#guests tr[data-key='lab/100'] td[data-col='cpu']")
        assert "muted" in cpu.get_attribute("class") and "last known" in cpu.get_attribute("title")

"""The live console in a real browser: Playwright driving Debian's Chromium against the installed service
(`twistd -n auditgen`) and the real broker.

The browser and the service are processes of their own, so these tests wait on the wall clock, each wait
bounded; Playwright's sync API runs its own loop and needs nothing of the Twisted reactor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT

TWISTD = str(Path(sys.executable).parent / "twistd")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

try:
    from playwright.sync_api import Page, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_PLAYWRIGHT = False

if not HAVE_PLAYWRIGHT or not Path(CHROMIUM).exists():
    reason = "needs Playwright (the test extra) and Debian's chromium (.ci/run installs it)"
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"the console's browser tests cannot run: {reason}")
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.integration


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """condition()'s first truthy value, polling a real process; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class Running:
    """The installed service on free ports, publishing to a queue of the test's."""

    def __init__(self, workdir: Path, queue: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            TWISTD, "-n", "--pidfile=", "auditgen", f"--app-port={self.port}",
            f"--prometheus-port={free_port()}", f"--rabbitmq-host={BROKER_HOST}",
            f"--rabbitmq-port={BROKER_PORT}", f"--rabbitmq-queue={queue}", "--rate=20",
        ]  # fmt: skip
        self.log = open(workdir / "service.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        until(self.healthy, 30, "/healthz to answer 200")

    def healthy(self) -> bool:
        assert self.process.poll() is None, "twistd exited"
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_console(browser: Any, url: str, width: int = 1280, height: int = 800) -> tuple[Page, list[str]]:
    """The console in a new page, and the list its console errors and page errors go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    return page, errors


def points(page: Page) -> int:
    return int(page.get_attribute("#chart-flow", "data-points") or 0)


def test_the_console_shows_the_service_live_and_steers_it(
    browser: Any, tmp_path: Path, queue_name: str
) -> None:
    """The page loads without errors, its charts move while the generator runs, a new rate shows in the
    achieved rate, a scenario run from its form appears in the tail with its scenario_id, a campaign
    started from the page shows its scorecard, and the page fits a phone-width screen."""
    service = Running(tmp_path, queue_name)
    try:
        page, errors = open_console(browser, service.url)
        first = until(lambda: points(page) >= 2 and points(page), 20, "the charts' first points")
        until(lambda: points(page) > first, 10, "the charts to move")
        until(lambda: float(page.inner_text("#f-confirmed") or 0) > 0, 10, "a confirmed rate above 0")

        page.fill("#generator-form input[name=rate]", "200")
        page.click("#generator-form button[type=submit]")
        until(lambda: "applied: 200" in page.inner_text("#generator-result"), 10, "the rate to be applied")
        assert service.get("/generator")["rate"] == 200
        until(lambda: float(page.inner_text("#f-achieved").replace(",", "")) > 150, 30, "achieved > 150/s")

        page.click("details[data-scenario=brute_force] summary")
        page.click("details[data-scenario=brute_force] button[type=submit]")
        answer = lambda: page.inner_text("#scenario-result")  # noqa: E731
        result = until(lambda: "scenario_id" in answer() and answer(), 10, "the scenario to be accepted")
        scenario_id = result.split("scenario_id ")[1].split(",")[0]
        until(lambda: page.locator("#tail li", has_text=scenario_id).count() > 0, 15, "the run in the tail")
        page.locator("#tail li", has_text=scenario_id).first.click()
        assert json.loads(page.inner_text("#tail-detail"))["details"]["scenario_id"] == scenario_id
        assert errors == []

        until(lambda: page.is_visible("#campaign-form"), 10, "the campaign form")
        page.click("#campaign-form button[type=submit]")
        until(lambda: "campaign " in page.inner_text("#campaign-result"), 10, "the campaign to start")
        scenarios = len(service.get("/scenarios")["scenarios"])  # the paced ones too
        rows = lambda: page.locator("#scorecard tbody tr").count()  # noqa: E731
        until(lambda: rows() == scenarios, 15, "a scorecard row per scenario run")
        assert errors == []

        phone, phone_errors = open_console(browser, service.url, width=390, height=844)
        until(lambda: points(phone) >= 2, 20, "the phone page's charts")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        assert phone_errors == []
    finally:
        service.stop()


def test_with_a_token_a_change_needs_it(browser: Any, tmp_path: Path, queue_name: str) -> None:
    """With AUDITGEN_API_TOKEN set the page asks for the token: a change without it is refused (and not
    made), and the same change with it goes through."""
    service = Running(tmp_path, queue_name, env={"AUDITGEN_API_TOKEN": "s3cret-console-token"})
    try:
        page, errors = open_console(browser, service.url)
        until(lambda: page.is_visible("#token"), 10, "the token field")
        page.fill("#generator-form input[name=rate]", "7")
        page.click("#generator-form button[type=submit]")
        until(lambda: "refused" in page.inner_text("#generator-result"), 10, "the refusal")
        assert service.get("/generator")["rate"] == 20

        page.fill("#token", "s3cret-console-token")
        page.dispatch_event("#token", "change")
        page.click("#generator-form button[type=submit]")
        until(lambda: "applied: 7" in page.inner_text("#generator-result"), 10, "the change with the token")
        assert service.get("/generator")["rate"] == 7
        assert [e for e in errors if "401" not in e] == []  # the refused fetch is logged by the browser
    finally:
        service.stop()

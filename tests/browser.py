"""Headless Chromium for the page tests and bench.pages: what a page loaded, and what went wrong.

`chromium()` drives Debian's `chromium` through its `chromedriver` (with the `selenium` package)
with the browser's console and network logs on, and with every host name but loopback made
unresolvable: a page that needs anything from another machine breaks, as it would offline.
`load()` opens a page, waits until it says it is ready, and returns every URL it requested and
every console error (Content-Security-Policy violations are console errors).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

TIMEOUT_S = 60
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss"})
BROWSER_SCHEMES = frozenset({"chrome", "chrome-untrusted", "devtools"})
# After the page is ready: time for its late work (ReDoc's search worker) to fail, if it does.
SETTLE_S = 1.0

# JavaScript expressions that are true once each page has rendered what it is for.
DEMO_PAGE_READY = "document.body.dataset.ready === 'true'"
SWAGGER_READY = "document.querySelectorAll('.opblock').length > 0"
REDOC_READY = "document.querySelectorAll('[data-section-id^=\"operation/\"]').length > 0"


class BrowserMissing(RuntimeError):
    """Chromium, chromedriver or selenium is not installed."""


@dataclass(frozen=True)
class PageLoad:
    """What loading one page did: the URLs it requested and the console's errors, in order.

    `blocked` are requests the browser refused before the network (a Content-Security-Policy
    refusal: each also logs a console error); `off_machine` are requests to another machine that
    were not refused so (offline they fail, but the page did send them).
    """

    url: str
    requests: tuple[str, ...]
    blocked: tuple[str, ...]
    console_errors: tuple[str, ...]

    @property
    def off_machine(self) -> tuple[str, ...]:
        """The requested URLs, not blocked, for a host other than this machine's loopback."""
        return tuple(
            url
            for url in self.requests
            if urlsplit(url).scheme in NETWORK_SCHEMES
            and urlsplit(url).hostname not in LOOPBACK_HOSTS
            and url not in self.blocked
        )


@contextmanager
def chromium(profile_dir: Path, *, window: str = "1100,1400") -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile in `profile_dir`, its logs on; quit afterwards."""
    try:
        from selenium import webdriver
    except ImportError as error:
        raise BrowserMissing("selenium is not installed") from error
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if browser is None or chromedriver is None:
        raise BrowserMissing(
            "chromium or chromedriver is not installed (apt-get install chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        # Offline, as far as pages can tell: every name but loopback fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        f"--window-size={window}",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(chromedriver))
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def load(driver: WebDriver, url: str, ready: str) -> PageLoad:
    """Open `url`, wait until the JavaScript expression `ready` is true; what the load did."""
    from selenium.webdriver.support.wait import WebDriverWait

    read_logs(driver)  # what came before: the browser's start page
    driver.get(url)
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.execute_script(f"return {ready};"))
    time.sleep(SETTLE_S)
    return read_logs(driver, url)


def read_logs(driver: WebDriver, url: str = "") -> PageLoad:
    """What the browser logged since the last call, for a load of `url`.

    Only requests made for a page (http, https, data: or blob: documents) count: Chromium's own
    pages (chrome://) load their resources from the browser itself.
    """
    urls: dict[str, str] = {}
    blocked = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            if urlsplit(params.get("documentURL", "")).scheme not in BROWSER_SCHEMES:
                urls[params["requestId"]] = params["request"]["url"]
        elif event.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
            if params["requestId"] in urls:
                blocked.append(urls[params["requestId"]])
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return PageLoad(url, tuple(urls.values()), tuple(blocked), tuple(errors))

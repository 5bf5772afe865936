"""Page check: the demo page, /docs and /redoc of `facedemo serve` in headless Chromium, offline.

    python -m bench.pages                       # the bundled models (models/)
    python -m bench.pages --tiny                # tiny random-weight bundles (no trained weights)
    python -m bench.pages --json /tmp/pages.json

Starts `facedemo serve` on a free loopback port with default settings (tests/served.py), then
drives Debian's Chromium through chromedriver (tests/browser.py) with every host name but loopback
made unresolvable, as on a machine without internet. For each page it prints its response headers
(Content-Security-Policy and the rest), every URL the page requested, those the browser refused
before the network (CSP), those that would have left the machine, and every console error (CSP
violations are console errors). On the demo page it also sends a photo (detect=skip) and waits for
the answer, which exercises fetch() under the policy. The server is stopped at the end, also on
an error or Ctrl-C.

Exit status 1 when the demo page or /docs logs a console error or requests another machine, or
when /redoc requests another machine (ReDoc 2.5 always asks cdn.redoc.ly for its logo: the policy
refuses that before the network, and the refusal is reported but does not fail).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from PIL import Image
from tests.browser import (
    DEMO_PAGE_READY,
    REDOC_READY,
    SWAGGER_READY,
    PageLoad,
    chromium,
    load,
    read_logs,
)
from tests.served import served

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REPORTED_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
    "server",
)


def photo(path: Path) -> Path:
    """A 320x240 gradient PNG to send from the demo page."""
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


PAGES = (("/?detect=skip", DEMO_PAGE_READY), ("/docs", SWAGGER_READY), ("/redoc", REDOC_READY))


def send_photo(driver: WebDriver, scratch: Path) -> PageLoad:
    """Choose a photo in the demo page; what the page did until its answer was shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.find_element(By.ID, "file").send_keys(str(photo(scratch / "photo.png")))
    state = WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "const state = document.body.dataset.state;"
            "return state === 'done' || state === 'error' ? state : null;"
        )
    )
    sent = read_logs(driver, driver.current_url)
    failed = () if state == "done" else (f"the upload ended in the page's {state} state",)
    return PageLoad(sent.url, sent.requests, sent.blocked, sent.console_errors + failed)


def check(base_url: str, scratch: Path) -> list[tuple[PageLoad, httpx.Headers]]:
    """Each page loaded in Chromium (the demo page with a photo sent), with its headers."""
    checked = []
    with chromium(scratch / "chromium-profile") as driver:
        for path, ready in PAGES:
            loaded = load(driver, base_url + path, ready)
            if path.startswith("/?"):
                sent = send_photo(driver, scratch)
                loaded = PageLoad(
                    loaded.url,
                    loaded.requests + sent.requests,
                    loaded.blocked + sent.blocked,
                    loaded.console_errors + sent.console_errors,
                )
            checked.append((loaded, httpx.get(base_url + path).headers))
    return checked


def passes(page: PageLoad) -> bool:
    """Nothing asked of another machine, and (but for ReDoc, see above) no console error."""
    return not page.off_machine and (page.url.endswith("/redoc") or not page.console_errors)


def report(checked: list[tuple[PageLoad, httpx.Headers]]) -> None:
    """Print what each page did."""
    for page, headers in checked:
        print(f"## {page.url}: {'PASS' if passes(page) else 'FAIL'}")
        for name in REPORTED_HEADERS:
            print(f"  header {name}: {headers.get(name)}")
        for url in page.requests:
            print(f"  request {url[:100]}")
        for url in page.blocked:
            print(f"  refused before the network: {url}")
        for url in page.off_machine:
            print(f"  OFF THE MACHINE: {url}")
        for error in page.console_errors or ("none",):
            print(f"  console error: {error}")


def main(argv: list[str] | None = None) -> int:
    """Serve, check the pages, print the report; exit 1 if a page failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="serve tiny random-weight bundles")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--json", type=Path, help="save what each page did here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="facedemo-pages-") as scratch_dir:
        scratch = Path(scratch_dir)
        models_dir = args.models_dir.resolve()
        if args.tiny:
            from tests.bundles import write_tiny_bundles

            models_dir = scratch / "models"
            write_tiny_bundles(models_dir)
        with served(models_dir, scratch / "server.log") as server:
            checked = check(server.url, scratch)
    report(checked)
    if args.json:
        saved = [
            {**asdict(page), "off_machine": page.off_machine, "headers": dict(headers)}
            for page, headers in checked
        ]
        args.json.write_text(json.dumps(saved, indent=2))
    return 0 if all(passes(page) for page, _ in checked) else 1


if __name__ == "__main__":
    sys.exit(main())

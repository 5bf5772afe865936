"""/docs and /redoc: served offline from the pinned package, under a policy they work under.

Over HTTP, the pages must name only this server's URLs, and those must be the package's files. In
a headless Chromium (skipped where it is not installed, tests/browser.py) that cannot resolve any
host but loopback, Swagger UI must render every operation and run one, with no console error.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx
import pytest
from tests.browser import (
    REDOC_READY,
    SWAGGER_READY,
    load,
    read_logs,
)
from tests.threaded_server import serving

from facedemo.api.routes.docs import ASSETS_DIR
from facedemo.config import Settings

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ASSET_MEDIA_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class AssetParser(HTMLParser):
    """The URL of every script, style sheet and icon a page loads, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.assets.append(attributes["src"] or "")
            else:
                self._in_inline_script = True
                self.inline_scripts.append("")
        elif tag == "link" and attributes.get("href"):
            self.assets.append(attributes["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts[-1] += data


def policy_of(response: httpx.Response) -> dict[str, str]:
    return dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server whose models never load: the docs pages need none."""
    with serving(Settings(models_dir=tmp_path_factory.mktemp("no-models")), ready=False) as url:
        yield url


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_page_loads_only_this_servers_copies_of_the_packaged_files(
    live_server: str, path: str
) -> None:
    response = httpx.get(live_server + path)
    page = AssetParser()
    page.feed(response.text)

    assert response.status_code == 200
    assert page.assets, "the page names no assets"
    assert not re.search(r"https?://", response.text), "the page names another host"
    for asset in page.assets:
        url = urljoin(live_server + path, asset)
        assert url.startswith(f"{live_server}/static/docs/"), url
        served = httpx.get(url)
        assert served.status_code == 200, url
        suffix = Path(asset).suffix
        assert served.headers["content-type"].split(";")[0] in ASSET_MEDIA_TYPES[suffix], url
        assert served.content == (ASSETS_DIR / Path(asset).name).read_bytes(), url


def test_swagger_ui_runs_only_its_own_inline_script_by_hash(live_server: str) -> None:
    response = httpx.get(f"{live_server}/docs")
    page = AssetParser()
    page.feed(response.text)
    policy = policy_of(response)

    [bootstrap] = page.inline_scripts
    digest = base64.b64encode(hashlib.sha256(bootstrap.encode()).digest()).decode()
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"
    assert "'unsafe-inline'" not in policy["style-src"]
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    # Swagger UI's default would send the document's URL to validator.swagger.io.
    assert '"validatorUrl": null' in bootstrap


def test_redoc_runs_no_inline_script(live_server: str) -> None:
    response = httpx.get(f"{live_server}/redoc")
    page = AssetParser()
    page.feed(response.text)

    assert page.inline_scripts == []
    assert policy_of(response)["script-src"] == "'self'"


def test_the_oauth2_redirect_page_is_not_served(live_server: str) -> None:
    # No OAuth2 flow here: the page FastAPI would add runs an inline script for nothing.
    response = httpx.get(f"{live_server}/docs/oauth2-redirect")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.anyio
async def test_the_assets_need_a_key_when_the_docs_do(tmp_path: Path) -> None:
    from facedemo.api import create_app

    key = "docs-key-3b9a"
    asset = "/static/docs/swagger-ui-bundle.js"
    statuses = []
    for protect_docs in (True, False):
        app = create_app(
            Settings(models_dir=tmp_path, api_keys=(key,), api_keys_protect_docs=protect_docs)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://facedemo") as client:
            statuses.append(
                [
                    (await client.get(asset)).status_code,
                    (await client.get(asset, headers={"X-API-Key": key})).status_code,
                ]
            )

    assert statuses == [[401, 200], [200, 200]]


# ----------------------------------------------------------------------------- in a browser


def test_swagger_ui_renders_and_runs_an_operation_offline(
    browser: WebDriver, live_server: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    openapi = httpx.get(f"{live_server}/openapi.json").json()
    operations = sum(len(methods) for methods in openapi["paths"].values())

    loaded = load(browser, f"{live_server}/docs", SWAGGER_READY)

    assert loaded.console_errors == ()
    assert loaded.off_machine == () and loaded.blocked == ()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) == operations
    # Try it out on GET /livez: Swagger UI's fetch() goes through connect-src 'self'.
    livez = browser.find_element(By.ID, "operations-health-livez")
    livez.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(browser, 30).until(lambda _: livez.find_elements(By.CSS_SELECTOR, ".try-out"))
    livez.find_element(By.CSS_SELECTOR, ".try-out button").click()
    livez.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(browser, 30).until(
        lambda _: livez.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tbody td.response-col_status"
        )
    )
    assert status[0].text.strip() == "200"
    assert read_logs(browser).console_errors == ()


def test_redoc_renders_offline_with_its_logo_refused(browser: WebDriver, live_server: str) -> None:
    loaded = load(browser, f"{live_server}/redoc", REDOC_READY)

    assert loaded.off_machine == ()
    # ReDoc 2.5 always asks its vendor's CDN for a logo: the policy refuses it before the network,
    # and that refusal is the one console error.
    assert loaded.blocked == ("https://cdn.redoc.ly/redoc/logo-mini.svg",)
    [refusal] = loaded.console_errors
    assert "cdn.redoc.ly" in refusal and "Content Security Policy" in refusal

"""The demo page at /: its files over HTTP, and a real headless Chromium clicking through it.

The browser tests need Debian's `chromium` and `chromium-driver` and the `selenium` package; they
skip, saying which is missing, where those are not installed (`.ci/run` installs them in CI).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.browser import DEMO_PAGE_READY, load, read_logs
from tests.threaded_server import serving

from facedemo.api.problems import PROBLEM_MEDIA_TYPE
from facedemo.api.routes.demo import STATIC_DIR
from facedemo.api.uploads import IMAGE_MEDIA_TYPES
from facedemo.config import Settings
from facedemo.imaging import ACCEPTED_FORMAT_NAMES

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

# The colour app.js strokes face boxes with.
BOX_RGB = (255, 212, 0)
PHOTO_HEIGHT, PHOTO_WIDTH = 240, 320
BROWSER_TIMEOUT_S = 60
# The page's age check: the threshold it starts with, and its note.
DEFAULT_AGE_CHECK = 18
AGE_CHECK_NOTE = "An estimate from a photo, not proof of age."
# The columns of the page's face table.
NUMBER, AGE, INTERVAL, BUCKET, AGE_CHECK, GENDER, BOX = range(7)


class LinkParser(HTMLParser):
    """Collects the src/href of every script, link and anchor of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.anchors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"] or "")
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href") or "")
        elif tag == "a" and attributes.get("href"):
            self.anchors.append(attributes["href"] or "")


@pytest.fixture(scope="module")
def live_server(tiny_models_dir: Path) -> Iterator[str]:
    with serving(Settings(models_dir=tiny_models_dir)) as base_url:
        yield base_url


# ----------------------------------------------------------------------------- over HTTP


def test_root_serves_the_page_with_its_script_style_and_docs_link(live_server: str) -> None:
    response = httpx.get(f"{live_server}/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = LinkParser()
    page.feed(response.text)
    base = f"{live_server}/"
    assert [urljoin(base, src) for src in page.scripts] == [f"{live_server}/static/app.js"]
    assert [urljoin(base, href) for href in page.stylesheets] == [f"{live_server}/static/style.css"]
    assert f"{live_server}/docs" in [urljoin(base, href) for href in page.anchors]
    # Offline: nothing is fetched from another host.
    assert "http://" not in response.text and "https://" not in response.text


def test_the_page_has_a_policy_that_allows_only_its_own_files(live_server: str) -> None:
    response = httpx.get(f"{live_server}/")

    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    # The page names its icon: without one, the browser's /favicon.ico is a 404 in the console.
    assert '<link rel="icon" href="static/favicon.svg"' in response.text
    icon = httpx.get(f"{live_server}/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")


@pytest.mark.parametrize(
    ("path", "media_types"),
    [
        ("/static/app.js", ("text/javascript", "application/javascript")),
        ("/static/style.css", ("text/css",)),
        ("/static/index.html", ("text/html",)),
    ],
)
def test_static_assets_are_served_with_their_media_type(
    live_server: str, path: str, media_types: tuple[str, ...]
) -> None:
    response = httpx.get(live_server + path)

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in media_types
    assert response.content == (STATIC_DIR / Path(path).name).read_bytes()


def test_missing_and_escaping_static_paths_are_404s(live_server: str) -> None:
    missing = httpx.get(f"{live_server}/static/nothing.js")
    escaping = httpx.get(f"{live_server}/static/..%2Fapi%2Fapp.py")

    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert escaping.status_code == 404


def test_the_page_is_not_in_the_openapi_document(live_server: str) -> None:
    paths = httpx.get(f"{live_server}/openapi.json").json()["paths"]

    assert "/" not in paths
    assert not any(path.startswith("/static") for path in paths)


# ----------------------------------------------------------------------------- in a browser


def gradient_photo(path: Path) -> np.ndarray:
    """A blue-green gradient PNG (no yellow anywhere), written to `path`; returns its pixels."""
    rows = np.linspace(40, 160, PHOTO_HEIGHT)[:, None]
    columns = np.linspace(20, 120, PHOTO_WIDTH)[None, :]
    pixels = np.zeros((PHOTO_HEIGHT, PHOTO_WIDTH, 3), dtype=np.uint8)
    pixels[..., 0] = 30
    pixels[..., 1] = (rows + columns) / 2
    pixels[..., 2] = 210
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return pixels


def open_page(browser: WebDriver, url: str) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, BROWSER_TIMEOUT_S).until(
        lambda driver: driver.execute_script("return document.body.dataset.ready") == "true"
    )


def upload_and_wait(browser: WebDriver, path: Path) -> str:
    """Choose `path` in the page's file input; the page's final state: "done" or "error"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    browser.find_element(By.ID, "file").send_keys(str(path))
    state: str = WebDriverWait(browser, BROWSER_TIMEOUT_S).until(
        lambda driver: driver.execute_script(
            "const state = document.body.dataset.state;"
            "return state === 'done' || state === 'error' ? state : null;"
        )
    )
    return state


def canvas_pixel(browser: WebDriver, x: int, y: int) -> tuple[int, ...]:
    rgba: list[Any] = browser.execute_script(
        "const canvas = document.getElementById('photo');"
        "return Array.from(canvas.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1)"
        ".data);",
        x,
        y,
    )
    return tuple(int(value) for value in rgba)


def face_cells(browser: WebDriver) -> list[str]:
    """The cells of the face table's one row."""
    from selenium.webdriver.common.by import By

    [row] = browser.find_elements(By.CSS_SELECTOR, "#face-rows tr.face")
    return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]


def shown_answer(browser: WebDriver) -> dict[str, Any]:
    """The answer the page shows as raw JSON."""
    from selenium.webdriver.common.by import By

    answer: dict[str, Any] = json.loads(browser.find_element(By.ID, "json").text)
    return answer


def expected_age_check(face: dict[str, Any], threshold: int) -> str:
    """The page's age-check line for `face`, its percentage rounded as JavaScript's Math.round."""
    probability = face["age"]["over"][str(threshold)]
    verdict = "likely" if probability >= 0.5 else f"likely under {threshold}"
    return f"{threshold} or older: {math.floor(probability * 100 + 0.5)}% ({verdict})"


def test_the_page_draws_a_box_and_label_for_each_face(
    browser: WebDriver, live_server: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    photo = tmp_path / "photo.png"
    pixels = gradient_photo(photo)
    # The tiny test models come without a detector: take the whole photo as the face.
    open_page(browser, f"{live_server}/?detect=skip")
    assert browser.find_element(By.ID, "detect").get_attribute("value") == "skip"
    # The page offers the modes the server's OpenAPI document lists.
    openapi = httpx.get(f"{live_server}/openapi.json").json()
    offered = browser.execute_script("return document.body.dataset.detectModes").split(",")
    assert offered == openapi["components"]["schemas"]["DetectMode"]["enum"]

    state = upload_and_wait(browser, photo)

    screenshot = tmp_path / "demo-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert state == "done", browser.find_element(By.ID, "error").text
    canvas = browser.find_element(By.ID, "photo")
    assert canvas.get_attribute("data-boxes") == "1"
    size = browser.execute_script("const c = arguments[0]; return [c.width, c.height];", canvas)
    assert size == [PHOTO_WIDTH, PHOTO_HEIGHT]
    # The box runs along the photo's edges (detect=skip), in the box colour ...
    middle_y = PHOTO_HEIGHT // 2
    assert canvas_pixel(browser, 0, middle_y) == (*BOX_RGB, 255)
    assert canvas_pixel(browser, PHOTO_WIDTH - 1, middle_y) == (*BOX_RGB, 255)
    assert canvas_pixel(browser, PHOTO_WIDTH // 2, PHOTO_HEIGHT - 1) == (*BOX_RGB, 255)
    # ... over the photo itself, which shows inside it.
    inside = canvas_pixel(browser, PHOTO_WIDTH // 2, middle_y)
    expected = pixels[middle_y, PHOTO_WIDTH // 2]
    assert all(abs(a - int(b)) <= 2 for a, b in zip(inside[:3], expected, strict=True)), inside

    [face] = shown_answer(browser)["faces"]
    cells = face_cells(browser)
    assert cells[NUMBER] == "1"
    assert cells[AGE] == f"{face['age']['years']:.1f} years"
    assert cells[BUCKET] == face["age"]["bucket"]
    assert cells[AGE_CHECK] == expected_age_check(face, DEFAULT_AGE_CHECK)
    assert cells[GENDER] == (
        f"{face['gender']['label']} {round(face['gender']['confidence'] * 100)}%"
    )
    assert cells[BOX] == f"0, 0, {PHOTO_WIDTH}, {PHOTO_HEIGHT}"
    assert screenshot.read_bytes().startswith(b"\x89PNG")


def test_the_page_works_under_its_policy_and_asks_only_this_server(
    browser: WebDriver, live_server: str, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    gradient_photo(photo)

    loaded = load(browser, f"{live_server}/?detect=skip", DEMO_PAGE_READY)
    state = upload_and_wait(browser, photo)
    used = read_logs(browser)

    assert state == "done"
    # A CSP refusal (script, style, fetch, image) would be a console error.
    assert loaded.console_errors == used.console_errors == ()
    requests = loaded.requests + used.requests
    assert all(url.startswith(f"{live_server}/") for url in requests), requests
    assert f"{live_server}/predict?detect=skip&age_over={DEFAULT_AGE_CHECK}" in requests
    # And the policy is in force, not only sent: an injected inline script does not run.
    ran = browser.execute_script(
        "const probe = document.createElement('script');"
        "probe.textContent = 'document.body.dataset.injected = \"ran\"';"
        "document.head.appendChild(probe);"
        "return document.body.dataset.injected === 'ran';"
    )
    assert ran is False


def test_the_page_names_the_detector_that_found_the_faces(
    browser: WebDriver, live_server: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    open_page(browser, f"{live_server}/?detect=auto")

    state = upload_and_wait(browser, photo)

    assert state == "done", browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "photo").get_attribute("data-boxes") == "1"
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("1 face in 512×512 px, found by RetinaFace ("), status


def test_the_page_checks_the_age_threshold_chosen(
    browser: WebDriver, live_server: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    photo = tmp_path / "photo.png"
    gradient_photo(photo)
    loaded = load(browser, f"{live_server}/?detect=skip", DEMO_PAGE_READY)
    control = browser.find_element(By.ID, "age-over")
    threshold = Select(control)
    assert threshold.first_selected_option.get_attribute("value") == str(DEFAULT_AGE_CHECK)
    assert [option.get_attribute("value") for option in threshold.options] == [
        "13",
        "16",
        "18",
        "21",
        "25",
    ]
    label = browser.execute_script("return arguments[0].labels[0].textContent;", control)
    assert "Age check" in label

    threshold.select_by_value("21")
    state = upload_and_wait(browser, photo)
    used = read_logs(browser)

    assert state == "done", browser.find_element(By.ID, "error").text
    assert f"{live_server}/predict?detect=skip&age_over=21" in used.requests
    [face] = shown_answer(browser)["faces"]
    assert list(face["age"]["over"]) == ["21"]
    assert face_cells(browser)[AGE_CHECK] == expected_age_check(face, 21)
    note = browser.find_element(By.ID, "age-check-note")
    assert note.is_displayed()
    assert note.text == AGE_CHECK_NOTE
    assert browser.find_element(By.TAG_NAME, "body").text.count(AGE_CHECK_NOTE) == 1

    # Another threshold sends the photo again, asking for that one.
    threshold.select_by_value("13")
    WebDriverWait(browser, BROWSER_TIMEOUT_S).until(
        lambda driver: driver.execute_script(
            "const cell = document.querySelector('#face-rows tr.face td:nth-child(5)');"
            "return document.body.dataset.state === 'done' && cell !== null"
            " && cell.textContent.startsWith('13 or older');"
        )
    )
    again = read_logs(browser)

    assert f"{live_server}/predict?detect=skip&age_over=13" in again.requests
    [face] = shown_answer(browser)["faces"]
    assert list(face["age"]["over"]) == ["13"]
    assert face_cells(browser)[AGE_CHECK] == expected_age_check(face, 13)
    # The result cell's colour is a class (the policy refuses inline styles): no console errors.
    assert loaded.console_errors == used.console_errors == again.console_errors == ()


def test_the_page_shows_a_problem_readably(
    browser: WebDriver, live_server: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"name,salary\nalice,123456\n")
    open_page(browser, f"{live_server}/?detect=skip")

    state = upload_and_wait(browser, not_an_image)

    assert state == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    problem = json.loads(browser.find_element(By.ID, "json").text)
    assert problem["code"] == "image_undecodable"
    assert browser.find_element(By.ID, "error-title").text == "Image could not be decoded"
    assert browser.find_element(By.ID, "error-detail").text == problem["detail"]
    assert "salary" not in error.text
    assert browser.find_element(By.ID, "photo").get_attribute("data-boxes") == "0"
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_the_page_asks_for_an_api_key_when_the_server_needs_one(
    browser: WebDriver, tiny_models_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    photo = tmp_path / "photo.png"
    gradient_photo(photo)
    settings = Settings(
        models_dir=tiny_models_dir, api_keys=("open-sesame",), api_keys_protect_docs=False
    )
    with serving(settings) as base_url:
        open_page(browser, f"{base_url}/?detect=skip")
        key_field = browser.find_element(By.ID, "api-key-field")
        assert not key_field.is_displayed()

        refused = upload_and_wait(browser, photo)
        assert refused == "error"
        assert key_field.is_displayed()
        assert json.loads(browser.find_element(By.ID, "json").text)["status"] == 401

        # Entering the key (change fires on leaving the field) sends the photo again.
        browser.find_element(By.ID, "api-key").send_keys("open-sesame", Keys.TAB)
        WebDriverWait(browser, BROWSER_TIMEOUT_S).until(
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done"
        )

    assert browser.find_element(By.ID, "photo").get_attribute("data-boxes") == "1"
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_the_page_names_and_picks_the_formats_the_service_accepts() -> None:
    # The page is a static file: this keeps its hint and file picker to imaging's one list.
    page = (STATIC_DIR / "index.html").read_text()

    assert f'<span class="hint">{ACCEPTED_FORMAT_NAMES}</span>' in page
    assert f'accept="{",".join(IMAGE_MEDIA_TYPES)}"' in page

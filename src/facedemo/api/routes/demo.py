"""GET / and /static/*: the demo page, its script and its style sheet, served from the package.

The page is plain HTML, JavaScript and CSS with no CDN or framework, so it works offline; it calls
POST /predict like any other client. It is left out of the OpenAPI document: it is not an API.
Its Content-Security-Policy (api/headers.py) lets it load only its own files and call this server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from facedemo.api.headers import DEMO_PAGE_POLICY

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_PATH = "/static"

router = APIRouter(tags=["demo"], include_in_schema=False)


@router.get("/", response_class=FileResponse)
async def demo_page() -> FileResponse:
    """Serve the demo page: choose or drop a photo, see each face boxed and labelled."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": DEMO_PAGE_POLICY},
    )


def static_files() -> StaticFiles:
    """The page's assets as an ASGI app, for `app.mount(STATIC_PATH, ...)`."""
    return StaticFiles(directory=STATIC_DIR)

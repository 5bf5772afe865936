"""GET /docs (Swagger UI) and /redoc (ReDoc), with their assets served by the service itself.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN (blank pages offline, and no
integrity check on what runs next to an API key). Here the same pages come from FastAPI's
`get_swagger_ui_html` / `get_redoc_html`, pointed at the copies the pinned `fastapi-offline`
package ships (pyproject.toml), mounted at DOCS_ASSETS_PATH: nothing leaves the machine.
Each page has a Content-Security-Policy that it works under (api/headers.py).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from facedemo.api.headers import content_security_policy, inline_script_hashes

# Under /static/, so the API-key policy for the docs covers the assets too (api/security.py).
DOCS_ASSETS_PATH = "/static/docs"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))

router = APIRouter(tags=["docs"], include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Serve Swagger UI over this service's OpenAPI document."""
    root, openapi_url = _urls(request)
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{request.app.title}: API documentation",
        swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
        # Swagger UI's default sends the document's URL to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    # The page's one inline script (SwaggerUIBundle({...})) runs by its hash; icons are data: URLs.
    page.headers["Content-Security-Policy"] = content_security_policy(
        script_src=f"'self' {inline_script_hashes(bytes(page.body).decode())}",
        style_src="'self'",
        img_src="'self' data:",
        connect_src="'self'",
    )
    return page


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    """Serve ReDoc over this service's OpenAPI document."""
    root, openapi_url = _urls(request)
    page = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{request.app.title}: API reference",
        redoc_js_url=f"{root}{DOCS_ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
    # ReDoc writes its styles into <style> elements as it renders (styled-components), which no
    # hash can cover: inline styles are allowed here, scripts still only from this server.
    page.headers["Content-Security-Policy"] = content_security_policy(
        script_src="'self'",
        style_src="'self' 'unsafe-inline'",
        img_src="'self' data:",
        connect_src="'self'",
        worker_src="'self' blob:",
    )
    return page


def docs_assets() -> StaticFiles:
    """Swagger UI's and ReDoc's files as an ASGI app, for `app.mount(DOCS_ASSETS_PATH, ...)`."""
    return StaticFiles(directory=ASSETS_DIR)


def _urls(request: Request) -> tuple[str, str]:
    # Behind a proxy that mounts the service under a prefix, every URL needs it.
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root, f"{root}{request.app.openapi_url}"

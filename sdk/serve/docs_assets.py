"""``/docs`` and ``/redoc`` with their scripts and styles served by the service itself, from
the installed ``fastapi-offline`` package (extra ``serve``): FastAPI's own pages load them
from a CDN, which leaves them blank on a network without internet access."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

ASSETS = "/docs-assets"
"""Where the pages' scripts and styles are served."""


def assets_dir() -> Path | None:
    """The folder of Swagger UI's and Redoc's files in the installed ``fastapi-offline``."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
    return folder if all((folder / f).is_file() for f in needed) else None


def add_docs(app: FastAPI) -> None:
    """Routes ``/docs`` and ``/redoc`` over local assets (the app is built with
    ``docs_url=None, redoc_url=None``). Without ``fastapi-offline`` they fall back to
    FastAPI's CDN pages, with a warning."""
    folder = assets_dir()
    title = f"{app.title} API"
    if folder is None:
        log.warning("fastapi-offline is not installed: /docs and /redoc need the internet")
        js = css = redoc = favicon = None
    else:
        app.mount(ASSETS, StaticFiles(directory=folder), name="docs-assets")
        js, css = f"{ASSETS}/swagger-ui-bundle.js", f"{ASSETS}/swagger-ui.css"
        redoc, favicon = f"{ASSETS}/redoc.standalone.js", f"{ASSETS}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        if js is None:
            return get_swagger_ui_html(openapi_url=app.openapi_url, title=title)
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=title,
            swagger_js_url=js,
            swagger_css_url=css,
            swagger_favicon_url=favicon,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        if redoc is None:
            return get_redoc_html(openapi_url=app.openapi_url, title=title)
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=title,
            redoc_js_url=redoc,
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )

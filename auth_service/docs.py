"""Interactive API docs: Swagger UI from the swagger-ui-bundle package, no CDN."""

from __future__ import annotations

import mimetypes
from pathlib import Path

import falcon
import swagger_ui_bundle

ASSETS_ROUTE = "/docs/assets/{name}"
_ASSET_DIR = Path(swagger_ui_bundle.swagger_ui_path)
_SHIPPED = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
# NOTE: the initialiser is a file, not an inline script, so a strict CSP can forbid
# inline scripts on the docs page too.
_INIT_JS = (
    'window.addEventListener("load", function () {\n'
    '  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});\n'
    "});\n"
)


def docs_page(title: str) -> str:
    """The HTML of /docs."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        '<link rel="stylesheet" href="/docs/assets/swagger-ui.css">'
        '<link rel="icon" href="/docs/assets/favicon-32x32.png"></head>'
        '<body><div id="swagger-ui"></div>'
        '<script src="/docs/assets/swagger-ui-bundle.js"></script>'
        '<script src="/docs/assets/init.js"></script></body></html>\n'
    )


class DocsAssets:
    """Serves the few Swagger UI files the page uses, read once at start-up."""

    def __init__(self) -> None:
        self._files = {name: (_ASSET_DIR / name).read_bytes() for name in _SHIPPED}
        self._files["init.js"] = _INIT_JS.encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """GET /docs/assets/{name}."""
        if name not in self._files:
            raise falcon.HTTPNotFound()
        resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        resp.cache_control = ["public", "max-age=86400"]
        resp.data = self._files[name]

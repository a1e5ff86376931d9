"""The gateway's own endpoints: health, readiness, the spec and Swagger UI (local assets)."""

from __future__ import annotations

import copy
import json
import mimetypes
from pathlib import Path
from typing import Any

import falcon
import requests
import swagger_ui_bundle

from authgate_common.problem_types import ProblemType
from gateway_service.problems import write_problem
from gateway_service.ratelimit import RedisStore, Store

_DOCS_HTML = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>authgate API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/assets/gateway-init.js"></script>
</body>
</html>
"""
# NOTE: a file, not an inline script, so the docs CSP can stay `script-src 'self'`.
_INIT_JS = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""
_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)


class Health:
    """GET /healthz: the process is alive."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer 200 without touching dependencies."""
        resp.media = {"status": "ok"}


class Ready:
    """GET /readyz: every upstream and Redis answer."""

    def __init__(self, upstreams: dict[str, str], session: requests.Session, store: Store) -> None:
        """`upstreams` maps a public check name to the upstream base URL."""
        self._upstreams = upstreams
        self._session = session
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 with the checks, or 503 problem naming the failed checks (never their hosts)."""
        checks: dict[str, str] = {}
        for name, base_url in self._upstreams.items():
            checks[name] = "ok" if self._probe(base_url) else "unavailable"
        if isinstance(self._store, RedisStore):
            checks["redis"] = "ok" if self._ping(self._store) else "unavailable"
        failed = sorted(name for name, state in checks.items() if state != "ok")
        if failed:
            write_problem(
                req, resp, ProblemType.NOT_READY, detail="Not ready: " + ", ".join(failed)
            )
            resp.set_header("Retry-After", "5")
            return
        resp.media = {"status": "ready", "checks": checks}

    def _probe(self, base_url: str) -> bool:
        try:
            response = self._session.get(
                f"{base_url}/healthz", timeout=(0.5, 2.0), allow_redirects=False
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    @staticmethod
    def _ping(store: RedisStore) -> bool:
        try:
            return bool(store.client.ping())
        except Exception:
            return False


class OpenAPIDocument:
    """GET /openapi.json: the spec as clients see it through the gateway."""

    def __init__(self, spec: dict[str, Any]) -> None:
        """Render once; servers are relative so the document works behind any host."""
        public = copy.deepcopy(spec)
        public["servers"] = [{"url": "/"}]
        self._body = json.dumps(public, separators=(",", ":"), default=str).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Serve the pre-rendered document."""
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class Docs:
    """GET /docs and /docs/assets/{name}: Swagger UI, shipped with the package."""

    def __init__(self) -> None:
        """Load the assets into memory once."""
        root = Path(swagger_ui_bundle.swagger_ui_path)
        self._assets = {name: (root / name).read_bytes() for name in _ASSETS}
        self._assets["gateway-init.js"] = _INIT_JS

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The HTML page."""
        resp.content_type = falcon.MEDIA_HTML
        resp.data = _DOCS_HTML

    def on_get_asset(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """One static asset by exact name; anything else is 404."""
        data = self._assets.get(name)
        if data is None:
            raise falcon.HTTPNotFound()
        resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        resp.cache_control = ["public", "max-age=86400"]
        resp.data = data

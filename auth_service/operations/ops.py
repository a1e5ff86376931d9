"""Responders of the `ops` tag: health, readiness, metrics, the spec and its docs."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from auth_service.docs import docs_page
from auth_service.metrics import CONTENT_TYPE, Metrics
from auth_service.problems import HTTPProblem
from auth_service.spec import Contract
from authgate_common.problem_types import ProblemType

ReadinessCheck = Callable[[], bool | None]


class OpsOperations:
    """Operator endpoints; none of them needs a token."""

    def __init__(
        self, contract: Contract, checks: dict[str, ReadinessCheck], metrics: Metrics
    ) -> None:
        self._spec_json = contract.json_bytes
        self._checks = checks
        self._metrics = metrics
        self._docs = docs_page("Authgate auth service")

    def healthz(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /healthz: the process answers."""
        resp.media = {"status": "ok"}

    def readyz(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /readyz: every dependency answers (503 naming the ones that do not)."""
        results = {name: check() for name, check in self._checks.items()}
        failing = sorted(name for name, ok in results.items() if ok is False)
        if failing:
            raise HTTPProblem(
                ProblemType.NOT_READY,
                detail=f"Unavailable: {', '.join(failing)}",
                headers={"Retry-After": "5"},
            )
        resp.media = {
            "status": "ready",
            "checks": {name: "ok" if ok else "disabled" for name, ok in results.items()},
        }

    def get_metrics(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /metrics: Prometheus text format (every worker's values under gunicorn)."""
        resp.content_type = CONTENT_TYPE
        resp.data = self._metrics.exposition()

    def get_openapi(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /openapi.json."""
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._spec_json

    def get_docs(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /docs: Swagger UI, served with local assets only."""
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self._docs

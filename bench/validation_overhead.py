"""How much spec validation adds to a request, as a ratio (README, "Performance").

Runs the real app in-process (falcon.testing, SQLite, BCRYPT_ROUNDS=4) and times, per
request, the whole request and the part spent in our validation middleware (request and
response checks). It also times openapi-core's own `OpenAPI.validate_request` +
`validate_response` on the same request: what validation costs done the naive way.

    .venv/bin/python bench/validation_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon
from falcon import testing
from openapi_core.contrib.falcon import FalconOpenAPIRequest, FalconOpenAPIResponse

from auth_service import validation
from auth_service.app import create_app
from auth_service.db.migrations import upgrade
from auth_service.settings import Settings
from auth_service.spec import Contract


class Stopwatch:
    """Accumulates the time spent inside the wrapped callables."""

    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - started

        return timed


def measure(stopwatch: Stopwatch, call: Callable[[], Any], n: int) -> tuple[float, float]:
    """Mean seconds per request, and of that, mean seconds inside validation."""
    for _ in range(min(200, n)):
        call()  # warm up
    stopwatch.total = 0.0
    started = time.perf_counter()
    for _ in range(n):
        call()
    elapsed = time.perf_counter() - started
    return elapsed / n, stopwatch.total / n


def naive_openapi_core(contract: Contract, result: testing.Result, **environ: Any) -> float:
    """Mean seconds for openapi-core's whole-spec request + response validation."""
    req = falcon.Request(testing.create_environ(**environ))
    resp = falcon.Response()
    resp.status = result.status_code
    resp.set_headers(dict(result.headers))
    resp.text = result.text
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        contract.openapi.validate_request(FalconOpenAPIRequest(req))
        contract.openapi.validate_response(FalconOpenAPIRequest(req), FalconOpenAPIResponse(resp))
        samples.append(time.perf_counter() - started)
    return statistics.mean(samples[20:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    stopwatch = Stopwatch()
    validation.SpecValidation.process_resource = stopwatch.wrap(
        validation.SpecValidation.process_resource
    )
    validation.SpecValidation.process_response = stopwatch.wrap(
        validation.SpecValidation.process_response
    )

    workdir = Path(tempfile.mkdtemp(prefix="bench-validation-"))
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'auth.db'}",
        var_dir=workdir,
        bcrypt_rounds=4,
        response_validation="strict",
    )
    upgrade(settings.database_url)
    contract = Contract.from_file(settings.spec_path)
    client = testing.TestClient(create_app(settings, contract=contract))
    credentials = {"email": "bench@example.com", "password": "benchmark password"}
    assert client.simulate_post("/api/v1/auth/register", json=credentials).status_code == 201
    token = client.simulate_post("/api/v1/auth/login", json=credentials).json["access_token"]
    me_headers = {"Authorization": f"Bearer {token}"}

    cases = {
        "GET /api/v1/auth/me": (
            lambda: client.simulate_get("/api/v1/auth/me", headers=me_headers),
            {"path": "/api/v1/auth/me", "method": "GET", "headers": me_headers},
            args.requests,
        ),
        "POST /api/v1/auth/login": (
            lambda: client.simulate_post("/api/v1/auth/login", json=credentials),
            {
                "path": "/api/v1/auth/login",
                "method": "POST",
                "body": json.dumps(credentials),
                "headers": {"Content-Type": "application/json"},
            },
            max(200, args.requests // 4),
        ),
    }
    header = ("operation", "request", "validation", "overhead", "naive openapi-core")
    print("{:26} {:>10} {:>11} {:>9} {:>19}".format(*header))
    for name, (call, environ, n) in cases.items():
        per_request, in_validation = measure(stopwatch, call, n)
        without = per_request - in_validation
        naive = naive_openapi_core(contract, call(), **environ)
        print(
            f"{name:26} {per_request * 1e3:8.3f}ms {in_validation * 1e6:9.1f}µs "
            f"{in_validation / without:8.1%} {naive * 1e3:8.3f}ms ({naive / without:5.1f}x)"
        )
    print(
        "\noverhead = time in request+response validation / time of the request without it "
        "(target for GET /auth/me: under 25%)"
    )


if __name__ == "__main__":
    main()

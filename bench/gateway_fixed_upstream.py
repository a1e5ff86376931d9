"""A trivial upstream for the gateway benchmark: fixed JSON, plus a JWKS from BENCH_JWKS_FILE."""

import os

_BODY = b'{"id":"00000000-0000-0000-0000-000000000001","email":"bench@example.com"}'
_JWKS = None


def app(environ, start_response):
    """Answer every request with the same small JSON document."""
    global _JWKS
    path = environ.get("PATH_INFO", "")
    if path == "/.well-known/jwks.json":
        if _JWKS is None:
            with open(os.environ["BENCH_JWKS_FILE"], "rb") as fh:
                _JWKS = fh.read()
        body = _JWKS
    else:
        body = _BODY
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]

"""A WSGI upstream for gateway tests: answers with exactly what reached it.

Controls travel as request headers (the gateway forwards them like any other):
X-Echo-Status (status code), X-Echo-Sleep (seconds), X-Echo-Content-Type (e.g. text/html
for an unreadable error page), X-Echo-Header ("Name: value; Name2: value2" added to the
response), X-Echo-Body-Size (answer with that many bytes instead of the echo).
GET /__hits returns how many echo requests arrived (per process; run it with one worker),
/.well-known/jwks.json serves the file named by ECHO_JWKS_FILE, /healthz answers 200, and
/internal/v1/revoked-sessions (the feed every gateway worker polls) an empty page; neither
counts as an echo request.
"""

import base64
import json
import os
import threading
import time

_lock = threading.Lock()
_hits = {"echo": 0, "jwks": 0}
_EMPTY_FEED = {"items": [], "next_cursor": "0." + "0" * 32 + ".0", "has_more": False}


def _count(name):
    with _lock:
        _hits[name] += 1


def _json(start_response, status, payload, extra=()):
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra]
    )
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/__hits":
        return _json(start_response, "200 OK", dict(_hits))
    if path == "/healthz":
        return _json(start_response, "200 OK", {"status": "ok"})
    if path == "/internal/v1/revoked-sessions":
        return _json(start_response, "200 OK", _EMPTY_FEED)
    if path == "/.well-known/jwks.json":
        _count("jwks")
        with open(os.environ["ECHO_JWKS_FILE"], "rb") as fh:
            body = fh.read()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
    _count("echo")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
    headers = sorted(
        [k[5:].replace("_", "-").lower(), v] for k, v in environ.items() if k.startswith("HTTP_")
    )
    if environ.get("CONTENT_TYPE"):
        headers.append(["content-type", environ["CONTENT_TYPE"]])
    if environ.get("CONTENT_LENGTH"):
        headers.append(["content-length", environ["CONTENT_LENGTH"]])
    delay = float(environ.get("HTTP_X_ECHO_SLEEP") or 0)
    if delay:
        time.sleep(delay)
    status = environ.get("HTTP_X_ECHO_STATUS") or "200"
    status_line = f"{status} Echo"
    extra = []
    for item in (environ.get("HTTP_X_ECHO_HEADER") or "").split(";"):
        if ":" in item:
            name, value = item.split(":", 1)
            extra.append((name.strip(), value.strip()))
    size = environ.get("HTTP_X_ECHO_BODY_SIZE")
    if size:
        data = bytes(i % 251 for i in range(int(size)))
        start_response(
            status_line,
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(len(data))),
                *extra,
            ],
        )
        return [data]
    content_type = environ.get("HTTP_X_ECHO_CONTENT_TYPE")
    if content_type:
        data = b"<html><body>Internal error at internal-host-7.local</body></html>"
        start_response(
            status_line,
            [("Content-Type", content_type), ("Content-Length", str(len(data))), *extra],
        )
        return [data]
    raw_uri = environ.get("RAW_URI", "")
    payload = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": raw_uri,
        "path": raw_uri.split("?", 1)[0],
        "query": environ.get("QUERY_STRING", ""),
        "headers": headers,
        "body_b64": base64.b64encode(body).decode(),
        "pid": os.getpid(),
    }
    return _json(start_response, status_line, payload, extra)

"""Profile the gateway's hot path in-process (cProfile): a token-checked proxied GET.

Run: .venv/bin/python bench/gateway_profile.py [--requests 3000]
Starts the fixed upstream under gunicorn, calls the WSGI app directly with a prepared
environ (no gunicorn in the way), prints per-request time and the top functions. First it
prices the two ways the gateway could call an upstream through requests: Session.send, and
the session adapter's own urllib3 pool (what the gateway does), CPU per exchange.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import TARGET, Stack, make_key

from gateway_service.app import create_app
from gateway_service.settings import Settings
from gateway_service.upstream import session_pool, upstream_session


def transport_cost(upstream: str, requests_: int) -> None:
    """CPU per small GET: Session.send vs the adapter's pool, same session, same upstream."""
    session = upstream_session(upstream, 4, True)
    pool = session_pool(session, upstream)
    url = upstream + TARGET

    def via_session() -> None:
        resp = session.get(url, stream=True, allow_redirects=False, timeout=(2, 5))
        resp.raw.read(decode_content=False)
        resp.close()

    def via_pool() -> None:
        resp = pool.urlopen(
            "GET",
            TARGET,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=5,
            preload_content=False,
            decode_content=False,
        )
        resp.read(decode_content=False)
        resp.release_conn()

    for name, call in (("Session.send", via_session), ("adapter pool urlopen", via_pool)):
        for _ in range(200):
            call()
        cpu = time.process_time()
        for _ in range(requests_):
            call()
        cpu_per = (time.process_time() - cpu) / requests_ * 1000
        print(f"transport {name:<22} {cpu_per:.3f} ms CPU per exchange")


def environ(token: str) -> dict:
    """A WSGI environ like gunicorn's for GET TARGET."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": TARGET,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
    }


def main() -> None:
    """Profile N requests and print the hot spots."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--redis", default="")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for Settings")
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gwprof-"))
    token, _, jwks = make_key(tmp)
    stack = Stack()
    try:
        upstream = stack.start_fixed_upstream(jwks, threads=4)
        transport_cost(upstream, args.requests)
        env = {
            "AUTH_SERVICE_URL": upstream,
            "RATE_LIMIT_DEFAULT": "1000000000/minute",
            **dict(item.split("=", 1) for item in args.env),
        }
        if args.redis:
            env["REDIS_URL"] = args.redis
        app = create_app(Settings.from_env(env))

        def one() -> None:
            statuses = []
            body = app(environ(token), lambda s, h, e=None: statuses.append(s))
            b"".join(body)
            if hasattr(body, "close"):
                body.close()
            assert statuses[0].startswith("200"), statuses

        for _ in range(200):
            one()
        started = time.perf_counter()
        cpu = time.process_time()
        for _ in range(args.requests):
            one()
        per = (time.perf_counter() - started) / args.requests * 1000
        cpu_per = (time.process_time() - cpu) / args.requests * 1000
        print(
            f"in-process, no profiler: {per:.3f} ms wall per request (includes the upstream), "
            f"{cpu_per:.3f} ms gateway CPU per request"
        )
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            one()
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(45)
    finally:
        stack.stop_all()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()

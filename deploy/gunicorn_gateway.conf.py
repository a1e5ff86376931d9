"""Gunicorn settings for the gateway: ``gunicorn -c deploy/gunicorn_gateway.conf.py``.

Everything is read from the environment (12-factor); a bad value stops start-up with a
message naming the variable. The auth service's file mirrors this one on purpose: each stays
readable on its own, and tests/test_compose.py checks both.
"""

import glob
import ipaddress
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

_SERVICE = "gateway"


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    """Read an integer setting, refusing junk with a message naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RuntimeError(f"{name} must be an integer, got a non-numeric value") from None
    if value < minimum:
        raise RuntimeError(f"{name} must be >= {minimum}")
    return value


def _trusted_networks(name: str) -> str:
    """Read a comma list of IPs/CIDRs; empty means trust nobody."""
    raw = os.environ.get(name, "")
    try:
        # strict=False and normalised, as the apps read it: 10.0.0.1/8 means 10.0.0.0/8
        # (gunicorn's own validator would refuse it with a less helpful message).
        networks = [
            str(ipaddress.ip_network(part.strip(), strict=False))
            for part in raw.split(",")
            if part.strip()
        ]
    except ValueError:
        raise RuntimeError(f"{name} must be comma-separated IPs or CIDRs") from None
    return ",".join(networks)


wsgi_app = "gateway_service.wsgi:app"
proc_name = f"authgate-{_SERVICE}"

# NOTE: 127.0.0.1 by default so a laptop run is not reachable from the network; compose
# sets GATEWAY_HOST=0.0.0.0 so the published port reaches it.
bind = [f"{os.environ.get('GATEWAY_HOST', '127.0.0.1')}:{_env_int('GATEWAY_PORT', 8000)}"]

# The gateway mostly waits on upstreams: a sync worker is held by one slow client or
# upstream (DESIGN §10), so each process runs threads; 8 per process keeps a slow
# upstream from starving the rest while its circuit breaker trips.
workers = _env_int("WEB_CONCURRENCY", 2)
worker_class = "gthread"
threads = _env_int("GATEWAY_THREADS", 8)

# With gthread, `timeout` only catches a worker whose main loop is stuck: a request running
# long in a thread does not trip it. Request deadlines are therefore the app's job
# (GATEWAY_CONNECT_TIMEOUT/GATEWAY_READ_TIMEOUT -> 504). graceful_timeout bounds how long a
# restart waits for in-flight requests, so keep GATEWAY_READ_TIMEOUT near or below it.
timeout = 30
graceful_timeout = 20
keepalive = 5

# SECURITY: gunicorn's default trusts X-Forwarded-Proto etc. from loopback, and reads
# FORWARDED_ALLOW_IPS at import time; both are set explicitly so only TRUSTED_PROXIES
# (empty: nobody) may claim the scheme. The PROXY-protocol and uwsgi listeners are off,
# but their allow-lists are pinned the same way in case someone turns one on.
forwarded_allow_ips = _trusted_networks("TRUSTED_PROXIES")
proxy_allow_ips = forwarded_allow_ips
uwsgi_allow_ips = forwarded_allow_ips
# SECURITY: nothing is mounted under a prefix, so no proxy may rewrite SCRIPT_NAME/PATH_INFO
# (gunicorn's default lets a trusted peer set both, i.e. choose the routed path).
forwarder_headers = ""

# Request-line and header limits: gunicorn's defaults, written down so a change is a
# decision. Bearer tokens and cookies fit comfortably in 8 KB per field; request bodies
# are capped by the app (GATEWAY_MAX_BODY_BYTES, 413).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# The app writes one JSON line per request itself; gunicorn's access log would double it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Worker heartbeat files on tmpfs: on a container's overlay filesystem a slow disk can
# stall the heartbeat and get healthy workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# Gunicorn >= 25.1 opens a control socket at one fixed path per user by default; the auth
# service and the gateway (and e2e tests) on one host would fight over it, and nothing
# here uses gunicornc.
control_socket_disable = True

# NOTE: gunicorn always writes "Server: gunicorn" (gunicorn.http.wsgi.Response.default_headers;
# no setting turns it off in 27.x, and a Server header set by the app is sent in addition,
# not instead). gateway_service/wsgi.py replaces the name gunicorn uses, once per worker.

_PROMETHEUS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def on_starting(server: "Arbiter") -> None:
    """Start every master with an empty Prometheus multiprocess directory."""
    if _PROMETHEUS_DIR:
        os.makedirs(_PROMETHEUS_DIR, exist_ok=True)
        # Files left by a previous run would be summed into this run's counters. Only
        # prometheus_client's own *.db files go: a mistyped directory must not be wiped.
        for stale in glob.glob(os.path.join(_PROMETHEUS_DIR, "*.db")):
            os.remove(stale)


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    """Drop a dead worker's live gauges so /metrics stops reporting them."""
    if _PROMETHEUS_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

"""Gunicorn settings shared by both services; each service's config file adds its own.

Everything is read from the environment (12-factor) each time a config file is loaded;
a bad value stops start-up with a message naming the variable.
"""

import glob
import os
import socket
from typing import TYPE_CHECKING, Any

from authgate_common.env import EnvReader

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker


# Both config files read the environment through the services' one reader.
ENV = EnvReader(os.environ)


def _trusted_networks(name: str) -> str:
    """A comma list of IPs/CIDRs, normalised as the apps read it; empty means trust nobody."""
    # NOTE: gunicorn's own validator would refuse 10.0.0.1/8 with a less helpful message.
    return ",".join(str(network) for network in ENV.networks(name))


def shared_settings() -> dict[str, Any]:
    """The gunicorn settings of both services, read from the environment now."""
    trusted = _trusted_networks("TRUSTED_PROXIES")
    return {
        "workers": ENV.integer("WEB_CONCURRENCY", 2, minimum=1, maximum=256),
        # NOTE: a sync worker is held by one slow client (docs/architecture.md,
        # "Processes"): threads, always.
        # gthread, except that an otherwise idle worker serves a keep-alive client's next
        # request in place: ~0.3 ms less per request on one connection (see the module).
        "worker_class": "gunicorn_worker.KeepAliveThreadWorker",
        # With gthread, `timeout` only catches a worker whose main loop is stuck: a request
        # running long in a thread does not trip it. Request deadlines are therefore the
        # apps' job (auth: short SQLAlchemy connect/pool timeouts -> fast 503; gateway:
        # GATEWAY_CONNECT_TIMEOUT/GATEWAY_READ_TIMEOUT -> 504, the latter near or below
        # graceful_timeout, which bounds how long a restart waits for in-flight requests).
        # PERF: one listening socket per worker, balanced by the kernel. With one shared
        # socket, whichever worker wakes first accepts a whole burst of connections, and a
        # client's 32 keep-alive connections can all land on one process (measured: the
        # other worker idles and throughput halves).
        "reuse_port": True,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        # SECURITY: gunicorn's default trusts X-Forwarded-Proto etc. from loopback, and
        # reads FORWARDED_ALLOW_IPS at import time; both are set explicitly so only
        # TRUSTED_PROXIES (empty: nobody) may claim the scheme. The PROXY-protocol and
        # uwsgi listeners are off, but their allow-lists are pinned the same way.
        "forwarded_allow_ips": trusted,
        "proxy_allow_ips": trusted,
        "uwsgi_allow_ips": trusted,
        # SECURITY: nothing is mounted under a prefix, so no proxy may rewrite SCRIPT_NAME
        # or PATH_INFO (gunicorn's default lets a trusted peer set both: choose the route).
        "forwarder_headers": "",
        # Request-line and header limits: gunicorn's defaults, written down so a change is
        # a decision. Bearer tokens and cookies fit in 8 KB per field; request bodies are
        # capped by the apps (413).
        "limit_request_line": 4094,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        # The apps write one JSON line per request; gunicorn's access log would double it.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": ENV.text("GUNICORN_LOG_LEVEL", "info"),
        # Worker heartbeat files on tmpfs: on a container's overlay filesystem a slow disk
        # can stall the heartbeat and get healthy workers killed.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,  # noqa: S108
        # Gunicorn >= 25.1 opens a control socket at one fixed path per user; the two
        # services (and e2e tests) on one host would fight over it, and nothing uses it.
        "control_socket_disable": True,
        # NOTE: gunicorn always writes "Server: gunicorn" (no setting turns it off in 27.x,
        # and an app's Server header is sent in addition, not instead); the worker class
        # (gunicorn_worker.py) replaces the name gunicorn uses, once per worker.
        "on_starting": on_starting,
        "when_ready": when_ready,
        "child_exit": child_exit,
    }


def _prometheus_dir() -> str:
    return ENV.text("PROMETHEUS_MULTIPROC_DIR", "")


def on_starting(server: "Arbiter") -> None:
    """Refuse a port already taken; start with an empty Prometheus multiprocess directory."""
    _refuse_taken_ports(server)
    directory = _prometheus_dir()
    if directory:
        os.makedirs(directory, exist_ok=True)
        # Files left by a previous run would be summed into this run's counters. Only
        # prometheus_client's own *.db files go: a mistyped directory must not be wiped.
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)


def _refuse_taken_ports(server: "Arbiter") -> None:
    """Stop if something already listens on our address.

    With reuse_port every worker binds its own socket, so a second copy started by mistake
    on the same port would not fail: the kernel would quietly split the traffic between
    the two. A plain bind (no SO_REUSEPORT) fails while any listener holds the address.
    """
    if server.master_pid:
        return  # a re-executed master (USR2) shares the port with the old one on purpose
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: connections of an earlier run in TIME_WAIT are no obstacle.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as ex:
                server.log.error(
                    "%s:%s is already in use (%s): is another copy running?",
                    address[0],
                    address[1],
                    ex.strerror,
                )
                raise SystemExit(1) from None


def when_ready(server: "Arbiter") -> None:
    """Say where we listen: with reuse_port gunicorn's own line names no address."""
    server.log.info("Workers listen at %s, one socket each", ", ".join(server.cfg.bind))


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    """Drop a dead worker's live gauges so /metrics stops reporting them."""
    if _prometheus_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

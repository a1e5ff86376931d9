"""Gunicorn settings for the auth service: ``gunicorn -c deploy/gunicorn_auth.conf.py``.

The settings both services share live in deploy/gunicorn_common.py; this file adds what
is the auth service's own. tests/test_compose.py checks both services' configs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gunicorn_common import ENV, shared_settings

# gunicorn reads its settings from this module's names.
globals().update(shared_settings())

wsgi_app = "auth_service.wsgi:app"
proc_name = "authgate-auth"

# NOTE: 127.0.0.1 by default so a laptop run is not reachable from the network; compose
# sets AUTH_HOST=0.0.0.0 because the container's loopback is not the gateway's.
_port = ENV.integer("AUTH_PORT", 8001, minimum=1, maximum=65535)
bind = [f"{ENV.text('AUTH_HOST', '127.0.0.1')}:{_port}"]

# Login is bcrypt-bound (CPU, releases the GIL), so threads overlap database and
# Redis I/O while bcrypt runs; WEB_CONCURRENCY processes use the cores.
threads = ENV.integer("AUTH_THREADS", 4, minimum=1, maximum=1024)


def worker_exit(server: object, worker: object) -> None:
    """Let this worker's mail sender finish the delivery in hand before the process ends.

    NOTE: stopped abruptly mid-delivery, a mail may be sent but not marked sent, and go out
    again once its claim lapses; a clean stop takes at most one SMTP exchange (10 s), below
    graceful_timeout.
    """
    wsgi = sys.modules.get("auth_service.wsgi")
    if wsgi is not None:
        wsgi.service.mail_sender.stop()

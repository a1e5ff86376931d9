"""Gunicorn settings for the gateway: ``gunicorn -c deploy/gunicorn_gateway.conf.py``.

The settings both services share live in deploy/gunicorn_common.py; this file adds what
is the gateway's own. tests/test_compose.py checks both services' configs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gunicorn_common import ENV, shared_settings

# gunicorn reads its settings from this module's names.
globals().update(shared_settings())

wsgi_app = "gateway_service.wsgi:app"
proc_name = "authgate-gateway"

# NOTE: 127.0.0.1 by default so a laptop run is not reachable from the network; compose
# sets GATEWAY_HOST=0.0.0.0 so the published port reaches it.
_port = ENV.integer("GATEWAY_PORT", 8000, minimum=1, maximum=65535)
bind = [f"{ENV.text('GATEWAY_HOST', '127.0.0.1')}:{_port}"]

# The gateway mostly waits on upstreams: a sync worker is held by one slow client or
# upstream (docs/architecture.md, "Processes"), so each process runs threads; 8 per
# process keeps a slow upstream from starving the rest while its circuit breaker trips.
threads = ENV.integer("GATEWAY_THREADS", 8, minimum=1, maximum=1024)

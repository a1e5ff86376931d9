"""gunicorn entry point: `gunicorn -c deploy/gunicorn_gateway.conf.py` (wsgi_app points here)."""

import sys

from gateway_service.app import create_app
from gateway_service.logs import configure_logging
from gateway_service.settings import Settings

_gunicorn_wsgi = sys.modules.get("gunicorn.http.wsgi")
if _gunicorn_wsgi is not None:
    # SECURITY: gunicorn writes `Server: gunicorn` on every response and no setting turns it
    # off; its Response reads this module global per response, so a neutral name here
    # replaces it (an app-set Server header would be sent in addition, not instead).
    _gunicorn_wsgi.SERVER = "authgate"  # type: ignore[attr-defined]  # a module global

settings = Settings.from_env()
configure_logging(settings.log_format)
app = create_app(settings)

"""gunicorn entry point: `gunicorn -c deploy/gunicorn_gateway.conf.py` (wsgi_app points here)."""

from gateway_service.app import create_app
from gateway_service.logs import configure_logging
from gateway_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_format)
app = create_app(settings)

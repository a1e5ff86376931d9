"""The gunicorn entry point: the only place that reads the environment."""

from auth_service.app import create_app
from auth_service.logs import configure_logging
from auth_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_format)
app = create_app(settings)

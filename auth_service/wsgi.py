"""The gunicorn entry point: the only place that reads the environment."""

from auth_service.app import create_service
from auth_service.logs import configure_logging
from auth_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_format)
service = create_service(settings)
app = service.app
# NOTE: gunicorn imports this module in every worker after the fork (no preload_app), so
# each worker runs one sender thread; they share the outbox safely (services/outbox.py).
if settings.mail_sender_in_process:
    service.mail_sender.start()

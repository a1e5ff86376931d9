"""Logging set-up for gunicorn workers: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time

ACCESS_LOGGER = "gateway_service.access"


class JsonFormatter(logging.Formatter):
    """Access lines are already JSON; everything else is wrapped into a JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one line."""
        if record.name == ACCESS_LOGGER:
            return record.getMessage()
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            # NOTE: tracebacks go to our log only, never into a response.
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the gateway's loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("gateway_service")
    if any(getattr(h, "_gateway", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._gateway = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

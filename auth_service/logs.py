"""Logging: one JSON object per line in production, readable lines on a console."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

ACCESS_LOGGER = "authgate.access"

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record and its `extra` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for one record."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        if "trace_id" not in entry:
            # Any line written while a traced request runs (an error, a breach) joins its
            # trace. With tracing off the current span is OpenTelemetry's invalid no-op.
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                entry["trace_id"] = trace.format_trace_id(span_context.trace_id)
                entry["span_id"] = trace.format_span_id(span_context.span_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """Lines for people: `... authgate.access POST /api/v1/auth/login 200 12.3ms rid=...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The access line in its short form; any other record as usual."""
        if record.name != ACCESS_LOGGER or not hasattr(record, "route"):
            return super().formatMessage(record)
        fields = record.__dict__
        line = (
            f"{record.asctime} {record.levelname} {record.name} "
            f"{fields.get('method')} {fields.get('route')} "
            f"{fields.get('status')} {fields.get('duration_ms', 0.0):.1f}ms "
            f"rid={fields.get('request_id')} user={fields.get('user_id') or '-'} "
            f"ip={fields.get('client_ip') or '-'}"
        )
        trace_id = fields.get("trace_id")
        return f"{line} trace={trace_id}" if trace_id else line


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send all logs to stderr, as JSON lines or as plain console lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
